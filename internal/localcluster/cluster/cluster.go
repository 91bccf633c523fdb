// Package cluster brings the local Kubernetes cluster up and down: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler built from Go
// modules, the process kubelets, the volume provisioner, all inside the
// cluster's network namespace, and a forwarder that publishes the API server
// on 127.0.0.1 for kubectl and helm.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/kubelet"
	"github.com/regent-dev/regent/internal/localcluster/loopvol"
	"github.com/regent-dev/regent/internal/localcluster/netfault"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/pki"
	"github.com/regent-dev/regent/internal/localcluster/realnode"
)

// Addresses inside the cluster's network namespace.
const (
	// APIServerIP is the API server's address, advertised to the cluster
	// (the kubernetes Service's endpoint) and dialled by every component.
	APIServerIP   = "10.244.0.1"
	apiServerPort = 6443
	serviceCIDR   = "10.96.0.0/16"
	kubernetesSvc = "10.96.0.1"
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	// KubeletPort is where each node serves its API (kubectl logs) on its
	// InternalIP, as a kubelet does.
	KubeletPort = 10250
)

// Config is where the cluster lives and how big it is.
type Config struct {
	// StateDir holds certificates, kubeconfigs, logs, pids and data.
	StateDir string
	// BinDir holds etcd, kube-apiserver, ... and localcluster itself.
	BinDir string
	// NetNS is the name of the cluster's network namespace.
	NetNS string
	// HostPort is where the API server is published on 127.0.0.1.
	HostPort int
	// Nodes is the number of process kubelets.
	Nodes int
	// ImageMap is the file mapping image names to local files.
	ImageMap string
	// RealNodes runs the nodes as real kubelets over containerd, with
	// kube-proxy and CoreDNS, instead of process kubelets (realnode).
	RealNodes bool
	// ImagesDir holds the real nodes' images (hack/images.sh).
	ImagesDir string
}

// realNodesMarker, in the state directory, says the cluster runs real
// nodes: down and status read it, and down removes it.
const realNodesMarker = "real-nodes"

// Resolved is the configuration with the running cluster's kind of nodes.
func (c Config) Resolved() Config {
	if _, err := os.Stat(filepath.Join(c.StateDir, realNodesMarker)); err == nil {
		c.RealNodes = true
	}
	return c
}

// AdminKubeconfig is the kubeconfig for people and tests on the host.
func (c Config) AdminKubeconfig() string { return filepath.Join(c.StateDir, "kubeconfig") }

// InsideKubeconfig is an admin kubeconfig for tools that run inside the
// cluster's network namespace (the API server at its in-cluster address).
func (c Config) InsideKubeconfig() string { return c.kubeconfig("admin-inside") }

func (c Config) pkiDir() string             { return filepath.Join(c.StateDir, "pki") }
func (c Config) logDir() string             { return filepath.Join(c.StateDir, "logs") }
func (c Config) volumeDir() string          { return filepath.Join(c.StateDir, "volumes") }
func (c Config) pidDir() string             { return filepath.Join(c.StateDir, "pids") }
func (c Config) kubeconfig(n string) string { return filepath.Join(c.StateDir, n+".kubeconfig") }

// NodeName is the name of node i (from 1).
func NodeName(i int) string { return fmt.Sprintf("local-%d", i) }

// podIPPrefix is the first three octets of node i's addresses: its pods
// get .1, .2, …, and the node itself .254.
func podIPPrefix(i int) string { return fmt.Sprintf("10.244.%d", i) }

func (c Config) nodeIP(i int) string {
	if c.RealNodes {
		return realnode.NodeIP(i)
	}
	return podIPPrefix(i) + ".254"
}

// ClusterDNS is the kube-dns Service's address on real nodes: where their
// pods (and clients inside a node's namespace) resolve the cluster's names.
const ClusterDNS = "10.96.0.10"

// NodeCgroupRoot is the cgroup under which real node's pods live.
func (c Config) NodeCgroupRoot(node string) string { return c.NetNS + "-" + node }

// NodeNetNS is real node i's network namespace: a client run there reaches
// Services as the node's pods do, through kube-proxy.
func (c Config) NodeNetNS(i int) string { return c.NetNS + "-" + NodeName(i) }

// realNode is node i as a real node.
func (c Config) realNode(i int) realnode.Node {
	name := NodeName(i)
	serving := c.kubeletServing(name)
	n := realnode.Node{
		Name: name, Zone: Zones[(i-1)%len(Zones)],
		Dir: filepath.Join(c.StateDir, "nodes", name), BinDir: c.BinDir,
		NetNS: c.NodeNetNS(i), IP: c.nodeIP(i),
		PodCIDR: podIPPrefix(i) + ".0/24", ClusterCIDR: netns.PodCIDR, ClusterDNS: ClusterDNS,
		Kubeconfig: c.kubeconfig("kubelet-" + name), ProxyKubeconfig: c.kubeconfig("kube-proxy"),
		CAFile: filepath.Join(c.pkiDir(), "ca.crt"), ServingCert: serving.Cert, ServingKey: serving.Key,
		CgroupRoot: c.NodeCgroupRoot(name), HeartbeatPausedFile: kubelet.HeartbeatPausedFile(filepath.Join(c.StateDir, "nodes", name)),
	}
	for _, img := range realImages {
		n.Images = append(n.Images, filepath.Join(c.ImagesDir, img+".tar"))
	}
	n.PauseImage = imageName(c.ImagesDir, "pause")
	return n
}

// realImages are the archives hack/images.sh writes, each imported into
// every real node.
var realImages = []string{"pause", "coredns", "postgres", "regent"}

// imageName is the first name an image archive is known by ("" if it has
// not been built).
func imageName(dir, image string) string {
	b, err := os.ReadFile(filepath.Join(dir, image+".tar.names"))
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// kubeletServing is node's serving certificate, for the API server's calls
// (one per kind of node: their addresses differ).
func (c Config) kubeletServing(node string) pki.Paths {
	if c.RealNodes {
		return pki.PathsFor(c.pkiDir(), "kubelet-"+node+"-real-serving")
	}
	return pki.PathsFor(c.pkiDir(), "kubelet-"+node+"-serving")
}

// Zones are given to nodes in turn, so that topology spread has something
// to spread over.
var Zones = []string{"zone-a", "zone-b", "zone-c"}

// process is one long-running process of the cluster.
type process struct {
	name string
	argv []string
	inNS bool // run inside the network namespace
	// node, for a real node: it runs in the node's namespaces.
	node *realnode.Node
}

func (c Config) processes() []process {
	p := c.pkiDir()
	bin := func(n string) string { return filepath.Join(c.BinDir, n) }
	saKey, saPub := filepath.Join(p, "sa.key"), filepath.Join(p, "sa.pub")
	apiserver := pki.PathsFor(p, "apiserver")
	kubeletClient := pki.PathsFor(p, "apiserver-kubelet-client")
	procs := []process{
		// The forwarder first: waiting for the API server goes through it.
		{name: "apiserver-forward", inNS: false, argv: []string{bin("localcluster"), "forward",
			"--netns=" + c.NetNS,
			"--listen=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HostPort)),
			"--to=" + net.JoinHostPort(APIServerIP, strconv.Itoa(apiServerPort)),
		}},
		{name: "etcd", inNS: true, argv: []string{bin("etcd"),
			"--name=local", "--data-dir=" + filepath.Join(c.StateDir, "etcd"),
			"--listen-client-urls=" + etcdClientURL, "--advertise-client-urls=" + etcdClientURL,
			"--listen-peer-urls=" + etcdPeerURL, "--initial-advertise-peer-urls=" + etcdPeerURL,
			"--initial-cluster=local=" + etcdPeerURL, "--unsafe-no-fsync=false",
		}},
		{name: "kube-apiserver", inNS: true, argv: []string{bin("kube-apiserver"),
			"--etcd-servers=" + etcdClientURL,
			"--bind-address=" + APIServerIP, "--advertise-address=" + APIServerIP,
			"--secure-port=" + strconv.Itoa(apiServerPort),
			"--tls-cert-file=" + apiserver.Cert, "--tls-private-key-file=" + apiserver.Key,
			"--client-ca-file=" + filepath.Join(p, "ca.crt"),
			"--authorization-mode=Node,RBAC",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
			"--allow-privileged=true",
			"--profiling=false",
			// kubectl logs: the API server calls the node's API on its
			// InternalIP, verifies it with the cluster's CA, and proves
			// itself with a client certificate.
			"--kubelet-client-certificate=" + kubeletClient.Cert, "--kubelet-client-key=" + kubeletClient.Key,
			"--kubelet-certificate-authority=" + filepath.Join(p, "ca.crt"),
			"--kubelet-preferred-address-types=InternalIP",
		}},
		{name: "kube-controller-manager", inNS: true, argv: []string{bin("kube-controller-manager"),
			"--kubeconfig=" + c.kubeconfig("controller-manager"),
			"--leader-elect=false", "--secure-port=0",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + saKey,
			"--root-ca-file=" + filepath.Join(p, "ca.crt"),
			"--cluster-name=regent-local",
		}},
		{name: "kube-scheduler", inNS: true, argv: []string{bin("kube-scheduler"),
			"--kubeconfig=" + c.kubeconfig("scheduler"),
			"--leader-elect=false", "--secure-port=0",
		}},
		{name: "provisioner", inNS: true, argv: []string{bin("localcluster"), "provisioner",
			"--kubeconfig=" + c.kubeconfig("provisioner"),
			"--dir=" + c.volumeDir(),
		}},
	}
	for i := 1; i <= c.Nodes && c.RealNodes; i++ {
		n := c.realNode(i)
		procs = append(procs, process{name: "node-" + n.Name, node: &n,
			argv: []string{bin("localcluster"), "node", "--config=" + filepath.Join(n.Dir, "node.json")}})
	}
	for i := 1; i <= c.Nodes && !c.RealNodes; i++ {
		node := NodeName(i)
		procs = append(procs, process{name: "kubelet-" + node, inNS: true, argv: []string{bin("localcluster"), "kubelet",
			"--node=" + node, "--zone=" + Zones[(i-1)%len(Zones)],
			"--kubeconfig=" + c.kubeconfig("kubelet-"+node),
			"--state=" + filepath.Join(c.StateDir, "nodes", node),
			"--image-map=" + c.ImageMap,
			"--netns=" + c.NetNS,
			"--pod-ip-prefix=" + podIPPrefix(i),
			"--apiserver=" + net.JoinHostPort(APIServerIP, strconv.Itoa(apiServerPort)),
			"--port=" + strconv.Itoa(KubeletPort),
			"--tls-cert-file=" + c.kubeletServing(node).Cert, "--tls-private-key-file=" + c.kubeletServing(node).Key,
			"--client-ca-file=" + filepath.Join(p, "ca.crt"),
		}})
	}
	return procs
}

// Up brings the cluster up, or finishes bringing it up: every process that
// already runs is left alone. It returns once the API server answers and
// every node is Ready.
func Up(ctx context.Context, c Config, logf func(string, ...any)) error {
	for _, d := range []string{c.StateDir, c.pkiDir(), c.logDir(), c.pidDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := c.writePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if c.RealNodes {
		if err := c.prepareRealNodes(); err != nil {
			return err
		}
	} else if err := netns.Ensure(c.NetNS); err != nil {
		return err
	}
	// Before any pod: connections are marked with their pod when opened.
	if err := netfault.Install(netns.Path(c.NetNS)); err != nil {
		return fmt.Errorf("network faults: %w", err)
	}
	procs := c.processes()
	for _, p := range procs {
		if pid, ok := c.running(p.name); ok {
			logf("%s already runs (pid %d)", p.name, pid)
			continue
		}
		if err := c.start(p); err != nil {
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		logf("started %s (log %s)", p.name, filepath.Join(c.logDir(), p.name+".log"))
		if p.name == "kube-apiserver" {
			if err := c.waitAPIServer(ctx); err != nil {
				return err
			}
		}
	}
	if err := c.waitNodes(ctx, logf); err != nil {
		return err
	}
	if c.RealNodes {
		return c.deployDNS(ctx, logf)
	}
	return nil
}

// start runs p detached: its own session, output to its log file, its pid
// in the pid directory.
func (c Config) start(p process) error {
	log, err := os.OpenFile(filepath.Join(c.logDir(), p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	var cmd *exec.Cmd
	switch {
	case p.node != nil:
		cmd = realnode.Command(*p.node, p.argv...)
	case p.inNS:
		cmd = netns.Command(c.NetNS, p.argv...)
	default:
		cmd = exec.Command(p.argv[0], p.argv[1:]...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return os.WriteFile(filepath.Join(c.pidDir(), p.name), []byte(strconv.Itoa(pid)), 0o600)
}

// running reports the pid of the named process if it still runs. A pid file
// whose process is gone, or whose pid now belongs to something else, does
// not count.
func (c Config) running(name string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(c.pidDir(), name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), c.BinDir) {
		return 0, false
	}
	return pid, true
}

// Pause stops (SIGSTOP) every process of one of the cluster's own
// processes, by name (kube-apiserver, etcd, kubelet-<node>…), or, with
// pause false, lets them go on (SIGCONT): the API server unreachable the
// way a stalled one is, connections open and unanswered.
func (c Config) Pause(name string, pause bool) error {
	pid, ok := c.running(name)
	if !ok {
		return fmt.Errorf("%s does not run", name)
	}
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	// The whole session: the process and anything it started.
	return syscall.Kill(-pid, sig)
}

// Down stops every process Up started (each in its own session, so the
// whole session goes), every pod process the kubelets left, and removes the
// network namespace. It touches nothing it did not start.
func Down(c Config, logf func(string, ...any)) error {
	procs := c.processes()
	// Kubelets first, so that they stop starting pods; the control plane
	// last.
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		pid, ok := c.running(p.name)
		if !ok {
			_ = os.Remove(filepath.Join(c.pidDir(), p.name))
			continue
		}
		stopSession(pid, 10*time.Second)
		logf("stopped %s (pid %d)", p.name, pid)
		_ = os.Remove(filepath.Join(c.pidDir(), p.name))
	}
	// Pods left behind by a kubelet that died: their cgroups hold them all.
	if err := cgroup.For(c.NetNS).Remove(10 * time.Second); err != nil {
		errs = append(errs, err)
	}
	for i := 1; i <= c.Nodes && c.RealNodes; i++ {
		realnode.Disconnect(c.NetNS, c.realNode(i))
	}
	if err := netns.Delete(c.NetNS); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(c.StateDir, realNodesMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	// The volumes' images stay; the provisioner mounts them again at up.
	if err := loopvol.UnmountAll(c.volumeDir()); err != nil {
		errs = append(errs, err)
	}
	if c.RealNodes {
		unshareMounts(c.volumeDir())
	}
	return errors.Join(errs...)
}

// stopSession sends SIGTERM to the session led by pid, waits, then SIGKILL.
func stopSession(pid int, grace time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && alive(pid) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// alive reports whether pid runs: a zombie (dead, waiting for whoever
// adopted it to reap it) does not.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// Status reports each process: running or not.
func Status(c Config) (map[string]int, error) {
	procs := c.processes()
	out := map[string]int{}
	for _, p := range procs {
		pid, _ := c.running(p.name)
		out[p.name] = pid
	}
	return out, nil
}

// ProcessNames lists the cluster's processes in start order.
func ProcessNames(c Config) []string {
	procs := c.processes()
	names := make([]string, len(procs))
	for i, p := range procs {
		names[i] = p.name
	}
	return names
}

func (c Config) writePKI() error {
	ca, err := pki.LoadOrCreateCA(c.pkiDir())
	if err != nil {
		return err
	}
	if _, _, err := pki.ServiceAccountKey(c.pkiDir()); err != nil {
		return err
	}
	if err := ca.Issue(pki.PathsFor(c.pkiDir(), "apiserver"), pki.Request{
		CommonName: "kube-apiserver", Server: true,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(APIServerIP), net.ParseIP(kubernetesSvc)},
	}); err != nil {
		return err
	}
	// The API server's client certificate for the nodes' APIs: the nodes
	// ask it, by SubjectAccessReview, what this user may do.
	if err := ca.Issue(pki.PathsFor(c.pkiDir(), "apiserver-kubelet-client"), pki.Request{
		CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"},
	}); err != nil {
		return err
	}
	for i := 1; i <= c.Nodes; i++ {
		node := NodeName(i)
		if err := ca.Issue(c.kubeletServing(node), pki.Request{
			CommonName: "system:node:" + node, Organization: []string{"system:nodes"}, Server: true,
			DNSNames: []string{node}, IPs: []net.IP{net.ParseIP(c.nodeIP(i))},
		}); err != nil {
			return err
		}
	}
	inside := "https://" + net.JoinHostPort(APIServerIP, strconv.Itoa(apiServerPort))
	outside := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HostPort))
	clients := []struct {
		name, cn string
		groups   []string
		server   string
		path     string
	}{
		{"admin", "regent-local-admin", []string{"system:masters"}, outside, c.AdminKubeconfig()},
		{"controller-manager", "system:kube-controller-manager", nil, inside, c.kubeconfig("controller-manager")},
		{"scheduler", "system:kube-scheduler", nil, inside, c.kubeconfig("scheduler")},
		// The provisioner and the kubelets are tools of this local cluster,
		// not the real thing: they get full rights rather than the node
		// authorizer's narrow ones.
		{"provisioner", "regent-local-provisioner", []string{"system:masters"}, inside, c.kubeconfig("provisioner")},
		// In-namespace admin, for tests and tools that run inside.
		{"admin-inside", "regent-local-admin", []string{"system:masters"}, inside, c.InsideKubeconfig()},
		// The real nodes' kube-proxy: the user the system:node-proxier
		// role is bound to.
		{"kube-proxy", "system:kube-proxy", nil, inside, c.kubeconfig("kube-proxy")},
	}
	for i := 1; i <= c.Nodes; i++ {
		node := NodeName(i)
		clients = append(clients, struct {
			name, cn string
			groups   []string
			server   string
			path     string
		}{"kubelet-" + node, "system:node:" + node, []string{"system:nodes", "system:masters"}, inside, c.kubeconfig("kubelet-" + node)})
	}
	for _, cl := range clients {
		paths := pki.PathsFor(c.pkiDir(), cl.name)
		if err := ca.Issue(paths, pki.Request{CommonName: cl.cn, Organization: cl.groups}); err != nil {
			return err
		}
		if err := writeKubeconfig(cl.path, cl.server, filepath.Join(c.pkiDir(), "ca.crt"), paths); err != nil {
			return err
		}
	}
	return nil
}

func writeKubeconfig(path, server, caFile string, p pki.Paths) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["regent-local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: p.Cert, ClientKey: p.Key}
	kc.Contexts["regent-local"] = &clientcmdapi.Context{Cluster: "regent-local", AuthInfo: "user"}
	kc.CurrentContext = "regent-local"
	return clientcmd.WriteToFile(*kc, path)
}

func (c Config) client() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 5 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (c Config) waitAPIServer(ctx context.Context) error {
	cs, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server is not ready after 90s (%w); see %s", last,
				filepath.Join(c.logDir(), "kube-apiserver.log"))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c Config) waitNodes(ctx context.Context, logf func(string, ...any)) error {
	cs, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, n := range nodes.Items {
				for _, cond := range n.Status.Conditions {
					if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		_, saErr := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if ready == c.Nodes && saErr == nil {
			logf("%d nodes ready", ready)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d nodes ready after 120s; see the logs in %s", ready, c.Nodes, c.logDir())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
