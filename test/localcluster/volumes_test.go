package localcluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/regent-dev/regent/internal/waitfor"
)

// A claim that grows gets a bigger filesystem, its data kept: online where
// the machine lets a mounted ext4 grow (CAP_SYS_RESOURCE), otherwise, as
// Kubernetes does for volumes that grow only offline, when the claim's pod
// next starts (the claim says FileSystemResizePending until then).
func TestAClaimThatGrowsGetsABiggerFilesystem(t *testing.T) {
	ns := newNamespace(t)
	script := `echo "start $(hostname)" >> /data/starts && exec sleep 3600`
	if _, err := cs.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "grow", script, 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const claim = "data-grow-0"
	dir := volumeDir(t, ns, claim)
	first := waitPodReady(t, ns, "grow-0")
	size := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	if s := size(); s > 1<<30 {
		t.Fatalf("a 1Gi volume of %d MiB", s>>20)
	}
	// A pod started while the volume is mounted must not hold it: its
	// containers see their own mounts only.
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), webPod(ns, "bystander", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, ns, "bystander")
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}`)
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Patch(t.Context(), claim, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var pending bool
	waitfor.Condition(t, 30*time.Second, "the volume grown, or its growth pending", func() error {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if resizePending(pvc) {
			pending = true
			return nil
		}
		if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
			return fmt.Errorf("capacity %s, conditions %v", got.String(), pvc.Status.Conditions)
		}
		return nil
	})
	if pending {
		t.Log("the filesystem cannot grow online here; it grows when the pod next starts")
		replacePod(t, first)
		waitfor.Condition(t, 30*time.Second, "the claim at 2Gi, nothing pending", func() error {
			pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 || resizePending(pvc) {
				return fmt.Errorf("capacity %s, conditions %v", got.String(), pvc.Status.Conditions)
			}
			return nil
		})
	}
	if s := size(); s < 1900<<20 {
		t.Errorf("the filesystem is %d MiB after growing to 2Gi", s>>20)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "starts")); err != nil || len(b) == 0 {
		t.Errorf("the data before the growth: %q, %v", b, err)
	}
}

func resizePending(pvc *corev1.PersistentVolumeClaim) bool {
	for _, c := range pvc.Status.Conditions {
		if c.Type == corev1.PersistentVolumeClaimFileSystemResizePending && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
