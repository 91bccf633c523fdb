// Package localcluster_test starts the local cluster (real etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, the process
// kubelets, the provisioner) and checks that it behaves as a cluster must
// for Regent: pods run, restart, keep their data, stop gracefully, serve on
// their IPs, Services can be followed, and nothing survives `down`.
package localcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/clustertest"
	"github.com/regent-dev/regent/internal/localcluster/kubelet"
	"github.com/regent-dev/regent/internal/localcluster/netns"

	"github.com/regent-dev/regent/internal/waitfor"
)

var (
	cfg cluster.Config
	cs  *kubernetes.Clientset
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestMain(m *testing.M) {
	os.Exit(clustertest.Main(m, clustertest.Options{
		Root: repoRoot(), Name: "localcluster-test",
		Tools: []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "localcluster"},
		// `down` must leave nothing: no process in the cluster's network
		// namespace or its cgroups, and neither of those.
		BeforeDown: func(c cluster.Config) func() []string {
			nsInode := inode(netns.Path(c.NetNS))
			return func() []string {
				var failures []string
				if left := processesInNetNS(nsInode); len(left) > 0 {
					failures = append(failures, fmt.Sprintf("processes survived down: %v", left))
				}
				if netns.Exists(c.NetNS) {
					failures = append(failures, "the network namespace survived down")
				}
				if _, err := os.Stat(string(cgroup.For(c.NetNS))); err == nil {
					failures = append(failures, "the cluster's cgroup survived down")
				}
				return failures
			}
		},
	}, func(c cluster.Config, clientset *kubernetes.Clientset) { cfg, cs = c, clientset }))
}

// inode identifies a namespace file.
func inode(path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// processesInNetNS lists the processes whose network namespace has the
// given inode.
func processesInNetNS(ino uint64) []string {
	if ino == 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		// This test process holds a thread that dialled into the
		// namespace (netns.Dial); it is no cluster process.
		if e.Name()[0] < '0' || e.Name()[0] > '9' || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		if inode("/proc/"+e.Name()+"/ns/net") == ino {
			cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	return out
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "lc-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The default ServiceAccount comes from the controller manager.
	waitfor.Condition(t, 30*time.Second, "default service account", func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(t.Context(), "default", metav1.GetOptions{})
		return err
	})
	return ns.Name
}

// waitFor polls cond until it returns nil or the timeout passes.

func podIPEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}
}

// webPod serves its own name over HTTP on its pod IP.
func webPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "web", Image: "python:3",
				Command: []string{"sh", "-c", `mkdir -p /tmp/www && echo "$POD_NAME" > /tmp/www/index.html && exec python3 -m http.server --bind "$POD_IP" --directory /tmp/www 8080`},
				Env: []corev1.EnvVar{podIPEnv(), {Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}},
			}},
		},
	}
}

func waitPodReady(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitfor.Condition(t, 60*time.Second, "pod "+name+" ready", func() error {
		var err error
		pod, err = cs.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("phase %s, containers %+v", pod.Status.Phase, pod.Status.ContainerStatuses)
	})
	return pod
}

// get fetches a URL from inside the cluster's network namespace.
func get(ctx context.Context, url string) (string, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, cfg.NetNS, network, addr)
		},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

func TestNodesAreReadyWithZones(t *testing.T) {
	nodes, err := cs.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]bool{}
	for _, n := range nodes.Items {
		zones[n.Labels[corev1.LabelTopologyZone]] = true
	}
	if len(nodes.Items) != 3 || len(zones) != 3 {
		t.Errorf("%d nodes in %d zones, want 3 in 3", len(nodes.Items), len(zones))
	}
}

func TestDeploymentServesOnItsPodIP(t *testing.T) {
	ns := newNamespace(t)
	labels := map[string]string{"app": "web"}
	pod := webPod(ns, "", labels)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var name string
	waitfor.Condition(t, 60*time.Second, "deployment available", func() error {
		pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 1 {
			return fmt.Errorf("pods: %w", err)
		}
		name = pods.Items[0].Name
		d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
		if err != nil || d.Status.AvailableReplicas != 1 {
			return fmt.Errorf("available %d: %w", d.Status.AvailableReplicas, err)
		}
		return nil
	})
	p := waitPodReady(t, ns, name)
	if p.Status.Phase != corev1.PodRunning || !strings.HasPrefix(p.Status.PodIP, "10.244.") {
		t.Fatalf("pod phase %s ip %s", p.Status.Phase, p.Status.PodIP)
	}
	body, err := get(t.Context(), "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/")
	if err != nil || body != name {
		t.Fatalf("GET on the pod IP: %q, %v; want %q", body, err, name)
	}
}

func TestKilledContainerIsRestartedAndCounted(t *testing.T) {
	ns := newNamespace(t)
	pod, err := cs.CoreV1().Pods(ns).Create(t.Context(), webPod(ns, "web", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod = waitPodReady(t, ns, pod.Name)
	g := cgroup.For(cfg.NetNS, pod.Spec.NodeName, string(pod.UID), "web")
	pids, _ := g.Procs()
	if len(pids) == 0 {
		t.Fatalf("no process in the container's cgroup %s", g)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 60*time.Second, "restart counted and ready again", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(t.Context(), "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := p.Status.ContainerStatuses[0]
		if st.RestartCount != 1 || !st.Ready || st.LastTerminationState.Terminated == nil {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d of the killed container survived", pid)
		}
	}
}

func TestUnknownImageFailsWithErrImagePull(t *testing.T) {
	ns := newNamespace(t)
	pod := webPod(ns, "bad", nil)
	pod.Spec.Containers[0].Image = "no-such-image:1"
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 30*time.Second, "ErrImagePull", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(t.Context(), "bad", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 1 {
			if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && w.Reason == "ErrImagePull" &&
				strings.Contains(w.Message, "no-such-image:1") {
				return nil
			}
		}
		return fmt.Errorf("statuses %+v", p.Status.ContainerStatuses)
	})
}

// volumeDir returns the directory behind a claim.
func volumeDir(t *testing.T, ns, claim string) string {
	t.Helper()
	var dir string
	waitfor.Condition(t, 30*time.Second, "claim "+claim+" bound", func() error {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pvc.Spec.VolumeName == "" {
			return fmt.Errorf("not bound")
		}
		pv, err := cs.CoreV1().PersistentVolumes().Get(t.Context(), pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		dir = pv.Spec.HostPath.Path
		return nil
	})
	return dir
}

func statefulSet(ns, name, script string, grace int64) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(grace),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsUser: ptr.To[int64](999), RunAsGroup: ptr.To[int64](999), FSGroup: ptr.To[int64](999),
					},
					Containers: []corev1.Container{{
						Name: "main", Image: "postgres:15", Command: []string{"sh", "-c", script},
						Env:          []corev1.EnvVar{podIPEnv()},
						Ports:        []corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432}},
						VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

func TestStatefulSetKeepsItsDataAcrossPodDeletion(t *testing.T) {
	ns := newNamespace(t)
	// Each start appends a line; the second pod must find the first's.
	script := `echo "start $(hostname)" >> /data/starts && exec sleep 3600`
	if _, err := cs.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "keep", script, 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := volumeDir(t, ns, "data-keep-0")
	first := waitPodReady(t, ns, "keep-0")
	replacePod(t, first)
	waitfor.Condition(t, 10*time.Second, "two starts recorded in the volume", func() error {
		b, err := os.ReadFile(filepath.Join(dir, "starts"))
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), "start keep-0"); n != 2 {
			return fmt.Errorf("%d starts: %q", n, b)
		}
		return nil
	})
}

func TestPodDeletionSendsSIGTERMAndHonoursTheGracePeriod(t *testing.T) {
	ns := newNamespace(t)
	// The container notes SIGTERM, then keeps running: the kubelet must
	// wait out the grace period, then kill it.
	script := `trap 'echo TERM >> /data/signals' TERM; while :; do sleep 0.1; done`
	const grace = 3
	if _, err := cs.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "term", script, grace), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := volumeDir(t, ns, "data-term-0")
	pod := waitPodReady(t, ns, "term-0")
	group := cgroup.For(cfg.NetNS, pod.Spec.NodeName, string(pod.UID))
	// Scale to zero so that the pod is not replaced while we watch.
	sts, err := cs.AppsV1().StatefulSets(ns).Get(t.Context(), "term", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sts.Spec.Replicas = ptr.To[int32](0)
	start := time.Now()
	if _, err := cs.AppsV1().StatefulSets(ns).Update(t.Context(), sts, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 30*time.Second, "pod object gone", func() error {
		_, err := cs.CoreV1().Pods(ns).Get(t.Context(), "term-0", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return errors.New("still there")
	})
	took := time.Since(start)
	b, _ := os.ReadFile(filepath.Join(dir, "signals"))
	if !strings.Contains(string(b), "TERM") {
		t.Errorf("the container never got SIGTERM (signals file %q)", b)
	}
	if took < grace*time.Second {
		t.Errorf("the pod went after %s, before its %ds grace period", took, grace)
	}
	if took > (grace+10)*time.Second {
		t.Errorf("the pod took %s to go with a %ds grace period", took, grace)
	}
	if pids, _ := group.Procs(); len(pids) != 0 {
		t.Errorf("processes of the deleted pod survive: %v", pids)
	}
	t.Logf("pod deleted in %s with a %ds grace period", took.Round(100*time.Millisecond), grace)
}

func TestPostgresPodAnswersPsqlOnItsPodIP(t *testing.T) {
	ns := newNamespace(t)
	script := `set -e
PGDATA=/data/pgdata
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres --auth=trust >/dev/null
  echo "host all all 10.244.0.0/16 trust" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses="$POD_IP" -c unix_socket_directories=/tmp`
	if _, err := cs.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "pg", script, 5), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitfor.Condition(t, 60*time.Second, "pg-0 running with an IP", func() error {
		var err error
		pod, err = cs.CoreV1().Pods(ns).Get(t.Context(), "pg-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s, ip %q", pod.Status.Phase, pod.Status.PodIP)
		}
		return nil
	})
	var out []byte
	waitfor.Condition(t, 60*time.Second, "psql answers", func() error {
		var err error
		out, err = exec.CommandContext(t.Context(), "nsenter", "--net="+netns.Path(cfg.NetNS), "--",
			"psql", "-h", pod.Status.PodIP, "-U", "postgres", "-At", "-c", "select 40 + 2").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	if strings.TrimSpace(string(out)) != "42" {
		t.Errorf("psql said %q", out)
	}
}

func TestFreezeAndThawAPod(t *testing.T) {
	ns := newNamespace(t)
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), webPod(ns, "web", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPodReady(t, ns, "web")
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + "/"
	group := cgroup.For(cfg.NetNS, pod.Spec.NodeName, string(pod.UID))
	if err := group.Freeze(true); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 5*time.Second, "frozen", func() error {
		if !group.Frozen() {
			return errors.New("not frozen yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if body, err := get(ctx, url); err == nil {
		t.Fatalf("a frozen pod answered %q", body)
	}
	if err := group.Freeze(false); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 10*time.Second, "thawed pod answers", func() error {
		_, err := get(t.Context(), url)
		return err
	})
}

func TestVolumesMountUnderHostDirectories(t *testing.T) {
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"},
		StringData: map[string]string{"password": "s3cret"}}
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// /etc/app does not exist on the host: the container still gets its
	// volume there, and keeps seeing the host's /etc around it.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "check"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "check", Image: "busybox",
				Command:      []string{"sh", "-c", `test "$(cat /etc/app/secret/password)" = s3cret && test -s /etc/passwd && test "$(hostname)" = check`},
				VolumeMounts: []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/app/secret", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 60*time.Second, "pod succeeded", func() error {
		p, err := cs.CoreV1().Pods(ns).Get(t.Context(), "check", metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			return nil
		case corev1.PodFailed:
			t.Fatalf("the checks in the container failed: %+v", p.Status.ContainerStatuses)
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
}

// A node that loses its heartbeat has its pods marked not ready by the node
// controller; once it posts again, its kubelet brings their status back
// (as a kubelet's status manager does), without a restart.
func TestPodsOfANodeBackFromAHeartbeatGapAreReadyAgain(t *testing.T) {
	ns := newNamespace(t)
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), webPod(ns, "steady", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPodReady(t, ns, "steady")
	paused := kubelet.HeartbeatPausedFile(filepath.Join(cfg.StateDir, "nodes", pod.Spec.NodeName))
	if err := os.WriteFile(paused, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(paused) })
	ready := func(want corev1.ConditionStatus) func() error {
		return func() error {
			p, err := cs.CoreV1().Pods(ns).Get(t.Context(), "steady", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == want {
					return nil
				}
			}
			return fmt.Errorf("conditions %v", p.Status.Conditions)
		}
	}
	stopped := time.Now()
	waitfor.Condition(t, 2*time.Minute, "the node controller marks the pod not ready", ready(corev1.ConditionFalse))
	t.Logf("pod marked not ready %s after the heartbeat stopped", time.Since(stopped).Round(time.Second))
	if err := os.Remove(paused); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	waitfor.Condition(t, 30*time.Second, "the pod ready again", ready(corev1.ConditionTrue))
	t.Logf("pod ready again %s after the heartbeat resumed", time.Since(resumed).Round(time.Second))
}

// replacePod deletes a StatefulSet's pod and waits until its replacement,
// a new pod of the same name, is ready.
func replacePod(t *testing.T, old *corev1.Pod) {
	t.Helper()
	if err := cs.CoreV1().Pods(old.Namespace).Delete(t.Context(), old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 60*time.Second, "a new "+old.Name, func() error {
		p, err := cs.CoreV1().Pods(old.Namespace).Get(t.Context(), old.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.UID == old.UID {
			return errors.New("still the old pod")
		}
		return nil
	})
	waitPodReady(t, old.Namespace, old.Name)
}
