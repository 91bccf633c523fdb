package kubelet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/regent-dev/regent/internal/localcluster/runtime"
	"github.com/regent-dev/regent/internal/names"
)

// startContainer starts the launcher for cs in a new mount namespace, inside
// the container's own cgroup, as the leader of its own process group.
func (w *podWorker) startContainer(cs *containerState) (*exec.Cmd, error) {
	env, err := w.env(cs)
	if err != nil {
		return nil, err
	}
	argv := append(append([]string{}, cs.spec.Command...), cs.spec.Args...)
	for i := range argv {
		argv[i] = expand(argv[i], env)
	}
	uid, gid, groups := w.identity(cs)
	rootfs := filepath.Join(w.dir, "rootfs", cs.spec.Name)
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, err
	}
	spec := &runtime.Spec{
		Rootfs: rootfs, Hostname: w.pod.Name, Image: cs.image, Argv: argv, WorkingDir: cs.spec.WorkingDir,
		UID: uid, GID: gid, Groups: groups,
		ReadOnlyRoot: cs.spec.SecurityContext != nil && cs.spec.SecurityContext.ReadOnlyRootFilesystem != nil &&
			*cs.spec.SecurityContext.ReadOnlyRootFilesystem,
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		spec.Env = append(spec.Env, k+"="+env[k])
	}
	for _, m := range cs.spec.VolumeMounts {
		src := filepath.Join(w.dir, "volumes", m.Name)
		if p, ok := w.claimPath(m.Name); ok {
			src = p
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
			_ = os.MkdirAll(src, 0o755)
		}
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	b, err := runtime.EncodeSpec(spec)
	if err != nil {
		return nil, err
	}
	specFile := filepath.Join(w.dir, "specs", cs.spec.Name+".json")
	if err := os.MkdirAll(filepath.Dir(specFile), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		return nil, err
	}
	logs, err := openCRILog(w.logPath(cs.spec.Name, cs.restartCount))
	if err != nil {
		return nil, err
	}
	// Deferred first, so run last: once the pipes' write ends live on in
	// the container only, the copies end when its last process does.
	defer logs.closeWhenDrained()
	stdout, err := logs.stream(runtimeapi.Stdout)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := logs.stream(runtimeapi.Stderr)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()

	// What is left of the last run was killed with its main process, and
	// may take a few milliseconds to die.
	group := w.containerCgroup(cs)
	if err := group.Remove(10 * time.Second); err != nil {
		return nil, err
	}
	if err := group.Create(); err != nil {
		return nil, err
	}
	fd, err := group.Open()
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	cmd := exec.Command(w.k.cfg.Launcher, "run-container", specFile)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Setpgid:     true,
		UseCgroupFD: true,
		CgroupFD:    int(fd.Fd()),
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start container %s: %w", cs.spec.Name, err)
	}
	return cmd, nil
}

// identity is the uid, gid and supplementary groups the container runs as.
func (w *podWorker) identity(cs *containerState) (int, int, []int) {
	uid, gid := 0, 0
	var groups []int
	if psc := w.pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			uid = int(*psc.RunAsUser)
		}
		if psc.RunAsGroup != nil {
			gid = int(*psc.RunAsGroup)
		}
		if psc.FSGroup != nil {
			groups = append(groups, int(*psc.FSGroup))
		}
		for _, g := range psc.SupplementalGroups {
			groups = append(groups, int(g))
		}
	}
	if sc := cs.spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = int(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = int(*sc.RunAsGroup)
		}
	}
	return uid, gid, groups
}

// env builds the container's environment: the image's, the service
// variables of the API server, then the container's own, in order, with
// $(VAR) references expanded as Kubernetes does.
func (w *podWorker) env(cs *containerState) (map[string]string, error) {
	ctx := context.Background()
	env := map[string]string{"HOSTNAME": w.pod.Name, "HOME": "/"}
	for k, v := range cs.image.Env {
		env[k] = v
	}
	env["KUBERNETES_SERVICE_HOST"] = w.k.cfg.APIServerHost
	env["KUBERNETES_SERVICE_PORT"] = w.k.cfg.APIServerPort
	env["KUBERNETES_SERVICE_PORT_HTTPS"] = w.k.cfg.APIServerPort
	// Every pod of this kubelet shares the cluster's network namespace.
	env[names.EnvSharedPodNetwork] = "true"
	ns := w.pod.Namespace
	for _, from := range cs.spec.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.k.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, err
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			s, err := w.k.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, err
			}
			for k, v := range s.Data {
				env[from.Prefix+k] = string(v)
			}
		}
	}
	for _, e := range cs.spec.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expand(e.Value, env)
			continue
		}
		v, err := w.valueFrom(ctx, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		env[e.Name] = v
	}
	return env, nil
}

func (w *podWorker) valueFrom(ctx context.Context, src *corev1.EnvVarSource) (string, error) {
	ns := w.pod.Namespace
	switch {
	case src.FieldRef != nil:
		return w.fieldValue(src.FieldRef.FieldPath)
	case src.SecretKeyRef != nil:
		s, err := w.k.client.CoreV1().Secrets(ns).Get(ctx, src.SecretKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		v, ok := s.Data[src.SecretKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("secret %s has no key %s", src.SecretKeyRef.Name, src.SecretKeyRef.Key)
		}
		return string(v), nil
	case src.ConfigMapKeyRef != nil:
		cm, err := w.k.client.CoreV1().ConfigMaps(ns).Get(ctx, src.ConfigMapKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		v, ok := cm.Data[src.ConfigMapKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("configmap %s has no key %s", src.ConfigMapKeyRef.Name, src.ConfigMapKeyRef.Key)
		}
		return v, nil
	case src.ResourceFieldRef != nil:
		return "", nil
	}
	return "", fmt.Errorf("unsupported value source")
}

// fieldValue resolves a downward API field path.
func (w *podWorker) fieldValue(path string) (string, error) {
	p := w.pod
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return w.ip, nil
	case "status.hostIP", "status.hostIPs":
		return w.k.hostIP(), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": p.Labels, "metadata.annotations": p.Annotations} {
		if rest, ok := strings.CutPrefix(path, prefix); ok {
			if rest == "" {
				var lines []string
				for k, v := range m {
					lines = append(lines, fmt.Sprintf("%s=%q", k, v))
				}
				sort.Strings(lines)
				return strings.Join(lines, "\n"), nil
			}
			key := strings.TrimSuffix(strings.TrimPrefix(rest, "['"), "']")
			return m[key], nil
		}
	}
	return "", fmt.Errorf("unsupported field path %s", path)
}

// expand replaces $(VAR) with the value of VAR when it is defined, and $$
// with $, as Kubernetes does for commands, args and env values.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
