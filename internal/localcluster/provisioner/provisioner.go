// Package provisioner turns claims of the local cluster's default
// StorageClass into PersistentVolumes of the claimed size (loop-mounted
// ext4 images, package loopvol), grows them when their claims grow, and
// deletes them when a released volume's reclaim policy is Delete. Data
// lives in the image, so it survives pod restarts and deletions.
package provisioner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/localcluster/loopvol"
)

const (
	// Name is the provisioner's name in StorageClasses.
	Name = "regent.dev/local-path"
	// StorageClass is the default StorageClass of the local cluster.
	StorageClass  = "local-path"
	provisionedBy = "pv.kubernetes.io/provisioned-by"
)

// EnsureStorageClass creates the default StorageClass.
func EnsureStorageClass(ctx context.Context, c kubernetes.Interface) error {
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClass, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true",
		}},
		Provisioner:          Name,
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode:    ptr.To(storagev1.VolumeBindingImmediate),
		AllowVolumeExpansion: ptr.To(true),
	}
	_, err := c.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Provisioner provisions and reclaims directory volumes.
type Provisioner struct {
	Client kubernetes.Interface
	// Dir holds one directory per volume.
	Dir string
	Log logr.Logger
	// failedGrow remembers the growths that failed, to say so once.
	failedGrow map[string]bool
}

// Run provisions and reclaims until ctx ends. It polls: a local cluster has
// few claims, and a second of latency does not matter here.
func (p *Provisioner) Run(ctx context.Context) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if err := p.pass(ctx); err != nil && ctx.Err() == nil {
			p.Log.Error(err, "Provisioning pass")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Provisioner) pass(ctx context.Context) error {
	classes, err := p.Client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]*storagev1.StorageClass{}
	for i := range classes.Items {
		if classes.Items[i].Provisioner == Name {
			ours[classes.Items[i].Name] = &classes.Items[i]
		}
	}
	claims, err := p.Client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		sc := ours[ptr.Deref(pvc.Spec.StorageClassName, "")]
		if sc == nil || pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.DeletionTimestamp != nil {
			continue
		}
		if err := p.provision(ctx, pvc, sc); err != nil {
			p.Log.Error(err, "Provision", "claim", pvc.Namespace+"/"+pvc.Name)
		}
	}
	volumes, err := p.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	bound := map[string]*corev1.PersistentVolumeClaim{}
	for i := range claims.Items {
		if claims.Items[i].Spec.VolumeName != "" {
			bound[claims.Items[i].Spec.VolumeName] = &claims.Items[i]
		}
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[provisionedBy] != Name || pv.Spec.HostPath == nil || pv.Status.Phase == corev1.VolumeReleased {
			continue
		}
		// After the cluster was down, or the machine restarted.
		if err := loopvol.EnsureMounted(pv.Spec.HostPath.Path); err != nil {
			p.Log.Error(err, "Mount volume", "volume", pv.Name)
			continue
		}
		if pvc := bound[pv.Name]; pvc != nil {
			if err := p.resize(ctx, pv, pvc); err != nil {
				p.Log.Error(err, "Resize volume", "volume", pv.Name)
			}
		}
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[provisionedBy] != Name || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		if pv.Spec.HostPath != nil {
			if err := loopvol.Remove(pv.Spec.HostPath.Path); err != nil {
				p.Log.Error(err, "Remove volume directory", "volume", pv.Name)
				continue
			}
		}
		err := p.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			p.Log.Error(err, "Delete volume", "volume", pv.Name)
			continue
		}
		p.Log.Info("Reclaimed volume", "volume", pv.Name)
	}
	return nil
}

func (p *Provisioner) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) error {
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(p.Dir, fmt.Sprintf("%s_%s_%s", pvc.Namespace, pvc.Name, pvc.UID))
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.Value() <= 0 {
		return fmt.Errorf("claim %s/%s asks for no storage", pvc.Namespace, pvc.Name)
	}
	if err := loopvol.Create(dir, size.Value()); err != nil {
		return err
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedBy: Name}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: ptr.Deref(sc.ReclaimPolicy, corev1.PersistentVolumeReclaimDelete),
			StorageClassName:              sc.Name,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr.To(corev1.HostPathDirectory)},
			},
		},
	}
	if _, err := p.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	p.Log.Info("Provisioned volume", "claim", pvc.Namespace+"/"+pvc.Name, "volume", name, "dir", dir)
	return nil
}

// resize grows a bound volume to its claim's request and records the new
// size on the volume and the claim, as an external resizer does. When the
// filesystem cannot grow online, the volume takes the new size and the
// claim says FileSystemResizePending: the kubelet grows it offline before
// a pod next starts with it, and the claim's size is recorded then.
func (p *Provisioner) resize(ctx context.Context, pv *corev1.PersistentVolume, pvc *corev1.PersistentVolumeClaim) error {
	want := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	have := pv.Spec.Capacity[corev1.ResourceStorage]
	dir := pv.Spec.HostPath.Path
	if !loopvol.HasImage(dir) {
		return nil
	}
	if want.Cmp(have) <= 0 {
		if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(have) != 0 && pvc.Status.Phase == corev1.ClaimBound {
			if pending, err := loopvol.GrowPending(dir); err != nil || pending {
				return err
			}
			return p.recordClaimSize(ctx, pvc, have)
		}
		return nil
	}
	err := loopvol.Grow(dir, want.Value())
	if err != nil {
		if pending, perr := loopvol.GrowPending(dir); perr != nil || !pending {
			// Said once per size asked: the pass runs twice a second.
			key := pv.Name + "=" + want.String()
			if p.failedGrow[key] {
				return nil
			}
			if p.failedGrow == nil {
				p.failedGrow = map[string]bool{}
			}
			p.failedGrow[key] = true
			return err
		}
		p.Log.Info("Cannot grow the filesystem online; it grows when a pod next starts with the claim",
			"volume", pv.Name, "error", err.Error())
	}
	pv = pv.DeepCopy()
	pv.Spec.Capacity[corev1.ResourceStorage] = want
	if _, err := p.Client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
		return err
	}
	p.Log.Info("Grew volume", "volume", pv.Name, "from", have.String(), "to", want.String(), "online", err == nil)
	if err != nil {
		return p.markResizePending(ctx, pvc)
	}
	return p.recordClaimSize(ctx, pvc, want)
}

// markResizePending says on the claim what Kubernetes says of a volume
// that grows only offline.
func (p *Provisioner) markResizePending(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	pvc = pvc.DeepCopy()
	pvc.Status.Conditions = append(WithoutResizeConditions(pvc.Status.Conditions), corev1.PersistentVolumeClaimCondition{
		Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.Now(),
		Message:            "Waiting for a pod to (re-)start to finish the file system resize of the volume on the node.",
	})
	_, err := p.Client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
	return err
}

func (p *Provisioner) recordClaimSize(ctx context.Context, pvc *corev1.PersistentVolumeClaim, size resource.Quantity) error {
	pvc = pvc.DeepCopy()
	if pvc.Status.Capacity == nil {
		pvc.Status.Capacity = corev1.ResourceList{}
	}
	pvc.Status.Capacity[corev1.ResourceStorage] = size
	pvc.Status.Conditions = WithoutResizeConditions(pvc.Status.Conditions)
	pvc.Status.AllocatedResources = nil
	pvc.Status.AllocatedResourceStatuses = nil
	_, err := p.Client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
	return err
}

// WithoutResizeConditions drops a claim's conditions about a growth in
// progress, keeping the others (such as the controller manager's Unused).
func WithoutResizeConditions(conds []corev1.PersistentVolumeClaimCondition) []corev1.PersistentVolumeClaimCondition {
	return slices.DeleteFunc(slices.Clone(conds), func(c corev1.PersistentVolumeClaimCondition) bool {
		return c.Type == corev1.PersistentVolumeClaimResizing || c.Type == corev1.PersistentVolumeClaimFileSystemResizePending
	})
}
