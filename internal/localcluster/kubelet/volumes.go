package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/localcluster/loopvol"
	"github.com/regent-dev/regent/internal/localcluster/provisioner"
)

// prepareVolumes fills <pod>/volumes/<name> for every volume of the pod but
// claims, whose directories (the PersistentVolume's path) are used as they
// are. It fails, to be retried, while something is missing (an unbound
// claim, a Secret not created yet).
func (w *podWorker) prepareVolumes(ctx context.Context) error {
	fsGroup := -1
	if psc := w.pod.Spec.SecurityContext; psc != nil && psc.FSGroup != nil {
		fsGroup = int(*psc.FSGroup)
	}
	for _, v := range w.pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		var files map[string]file
		var err error
		switch {
		case v.EmptyDir != nil:
			err = mkdirOwned(dir, 0o777, fsGroup)
		case v.HostPath != nil:
			err = os.MkdirAll(v.HostPath.Path, 0o755)
			if err == nil {
				err = symlinkDir(v.HostPath.Path, dir)
			}
		case v.PersistentVolumeClaim != nil:
			err = w.prepareClaim(ctx, v.Name, v.PersistentVolumeClaim.ClaimName, fsGroup)
		case v.Secret != nil:
			files, err = w.secretFiles(ctx, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
		case v.ConfigMap != nil:
			files, err = w.configMapFiles(ctx, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
		case v.DownwardAPI != nil:
			files, err = w.downwardFiles(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			files, err = w.projectedFiles(ctx, v.Projected)
		default:
			err = fmt.Errorf("volume %s: this local kubelet supports emptyDir, hostPath, persistentVolumeClaim, secret, configMap, downwardAPI and projected volumes", v.Name)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if files != nil {
			if err := writeFiles(dir, files, fsGroup); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
	}
	return nil
}

// file is one file of a Secret, ConfigMap, downward API or projected volume.
type file struct {
	data []byte
	mode os.FileMode
}

func writeFiles(dir string, files map[string]file, fsGroup int) error {
	if err := mkdirOwned(dir, 0o755, fsGroup); err != nil {
		return err
	}
	for name, f := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if fsGroup >= 0 {
			_ = os.Chown(tmp, 0, fsGroup)
		}
		_ = os.Chmod(tmp, f.mode)
		// Rename, so that a reader never sees half a file (tokens are
		// rewritten while the pod runs).
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

func mkdirOwned(dir string, mode os.FileMode, fsGroup int) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	if fsGroup >= 0 {
		if err := os.Chown(dir, 0, fsGroup); err != nil {
			return err
		}
		return os.Chmod(dir, mode|os.ModeSetgid)
	}
	return nil
}

func symlinkDir(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	_ = os.Remove(link)
	return os.Symlink(target, link)
}

// claimPath returns the directory of a claim volume.
func (w *podWorker) claimPath(volume string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(w.dir, "claims", volume))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// prepareClaim finds the directory behind a bound claim and gives its
// ownership to fsGroup when it does not have it (fsGroupChangePolicy
// OnRootMismatch, the only policy here).
func (w *podWorker) prepareClaim(ctx context.Context, volume, claim string, fsGroup int) error {
	pvc, err := w.k.client.CoreV1().PersistentVolumeClaims(w.pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return fmt.Errorf("claim %s is not bound yet", claim)
	}
	pv, err := w.k.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var path string
	switch {
	case pv.Spec.HostPath != nil:
		path = pv.Spec.HostPath.Path
	case pv.Spec.Local != nil:
		path = pv.Spec.Local.Path
	default:
		return fmt.Errorf("volume %s is neither hostPath nor local", pv.Name)
	}
	// Before the pod's first start, as a kubelet expands a volume that
	// only grows offline when it stages it: no container uses it yet.
	if !w.volumesPrepared {
		w.growOffline(ctx, pvc, path)
	}
	if err := loopvol.Ready(path); err != nil {
		return err
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	if fsGroup >= 0 {
		var st os.FileInfo
		if st, err = os.Stat(path); err != nil {
			return err
		}
		if gid, ok := groupOf(st); !ok || gid != fsGroup {
			if err := chownTree(path, fsGroup); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(w.dir, "claims"), 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(w.dir, "claims", volume), []byte(path), 0o600)
}

func (w *podWorker) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, mode *int32, optional *bool) (map[string]file, error) {
	s, err := w.k.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional != nil && *optional {
			return map[string]file{}, nil
		}
		return nil, err
	}
	return keyFiles(s.Data, items, mode)
}

func (w *podWorker) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, mode *int32, optional *bool) (map[string]file, error) {
	cm, err := w.k.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional != nil && *optional {
			return map[string]file{}, nil
		}
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items, mode)
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, mode *int32) (map[string]file, error) {
	def := os.FileMode(ptr.Deref(mode, 0o644))
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, def}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("no key %s", it.Key)
		}
		m := def
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		out[it.Path] = file{v, m}
	}
	return out, nil
}

func (w *podWorker) downwardFiles(items []corev1.DownwardAPIVolumeFile, mode *int32) (map[string]file, error) {
	def := os.FileMode(ptr.Deref(mode, 0o644))
	out := map[string]file{}
	for _, it := range items {
		if it.FieldRef == nil {
			continue
		}
		v, err := w.fieldValue(it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		m := def
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		out[it.Path] = file{[]byte(v), m}
	}
	return out, nil
}

func (w *podWorker) projectedFiles(ctx context.Context, p *corev1.ProjectedVolumeSource) (map[string]file, error) {
	out := map[string]file{}
	merge := func(m map[string]file, err error) error {
		if err != nil {
			return err
		}
		for k, v := range m {
			out[k] = v
		}
		return nil
	}
	for _, src := range p.Sources {
		var err error
		switch {
		case src.Secret != nil:
			err = merge(w.secretFiles(ctx, src.Secret.Name, src.Secret.Items, p.DefaultMode, src.Secret.Optional))
		case src.ConfigMap != nil:
			err = merge(w.configMapFiles(ctx, src.ConfigMap.Name, src.ConfigMap.Items, p.DefaultMode, src.ConfigMap.Optional))
		case src.DownwardAPI != nil:
			err = merge(w.downwardFiles(src.DownwardAPI.Items, p.DefaultMode))
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = w.token(ctx, src.ServiceAccountToken)
			if err == nil {
				out[src.ServiceAccountToken.Path] = file{[]byte(tok), os.FileMode(ptr.Deref(p.DefaultMode, 0o644))}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// token asks the API server for a token of the pod's service account,
// bound to the pod, as the kubelet's projected token volume does.
func (w *podWorker) token(ctx context.Context, p *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := w.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID,
		},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	tr, err := w.k.client.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s: %w", sa, err)
	}
	return strings.TrimSpace(tr.Status.Token), nil
}

// growOffline grows the claim's filesystem if its growth is pending, and
// records the claim's new size. A failure leaves the volume as it was, and
// the pod starts with it: the growth is tried again at the next start.
func (w *podWorker) growOffline(ctx context.Context, pvc *corev1.PersistentVolumeClaim, path string) {
	if pending, err := loopvol.GrowPending(path); err != nil || !pending {
		return
	}
	log := w.k.log.WithValues("pod", w.key(), "claim", pvc.Name)
	if err := loopvol.GrowOffline(path); err != nil {
		log.Error(err, "Growing the volume offline failed; the pod starts with its old size")
		return
	}
	log.Info("Grew the volume's filesystem offline")
	pv, err := w.k.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return // the provisioner records the claim's size on its next pass
	}
	pvc = pvc.DeepCopy()
	if pvc.Status.Capacity == nil {
		pvc.Status.Capacity = corev1.ResourceList{}
	}
	pvc.Status.Capacity[corev1.ResourceStorage] = pv.Spec.Capacity[corev1.ResourceStorage]
	pvc.Status.Conditions = provisioner.WithoutResizeConditions(pvc.Status.Conditions)
	if _, err := w.k.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		log.Info("Recording the claim's new size failed; the provisioner will", "error", err.Error())
	}
}
