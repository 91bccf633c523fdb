// Package realnodes_test is the user's first `helm install` on real nodes:
// the local cluster's nodes are the pinned kubelet and kube-proxy over
// containerd and runc, the images are the ones hack/images.sh built (regent
// from the Dockerfile), clients find the leader by its Service's DNS name
// through CoreDNS and kube-proxy, and the database pods run in a namespace
// that enforces the restricted Pod Security Standard. It needs root, the
// tools `make test` builds and `make images`.
package realnodes_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/clustertest"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/waitfor"
)

var (
	cfg  cluster.Config
	cs   *kubernetes.Clientset
	root string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..")
	os.Exit(clustertest.Main(m, clustertest.Options{
		Root: root, Name: "realnodes", RealNodes: true,
		Tools: []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
			"helm", "kubectl", "localcluster", "images/regent.tar", "images/postgres.tar", "images/pause.tar", "images/coredns.tar"},
	}, func(c cluster.Config, clientset *kubernetes.Clientset) { cfg, cs = c, clientset }))
}

// tool runs bin/<name> against the cluster and returns its output.
func tool(t testing.TB, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "bin", name), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cfg.AdminKubeconfig(), "HELM_CACHE_HOME="+t.TempDir(),
		"HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	cmd.Dir = root
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	return tool(t, "", "kubectl", args...)
}

// The namespaces enforce the restricted Pod Security Standard: a pod of
// the chart or of the operator that asked for more would not be admitted.
const (
	operatorNS = "regent-system"
	ns         = "shop"
)

var (
	installOnce sync.Once
	installed   bool
)

// install installs the chart with the image built from the Dockerfile
// (regent:dev), and a 3-pod ReplicaSet db in ns, and waits until it is
// Healthy.
func install(t *testing.T) {
	t.Helper()
	installOnce.Do(func() {
		for _, n := range []string{operatorNS, ns} {
			kubectl(t, "create", "namespace", n)
			kubectl(t, "label", "namespace", n, "pod-security.kubernetes.io/enforce=restricted",
				"pod-security.kubernetes.io/enforce-version=latest")
		}
		start := time.Now()
		tool(t, "", "helm", "install", "regent", "charts/regent", "--namespace", operatorNS,
			"--set", "image.tag=dev", "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m")
		t.Logf("helm install: the operator's pods ready %s after the install began", time.Since(start).Round(100*time.Millisecond))
		// db in Async mode, the default; ledger in Sync mode, where no
		// acknowledged write may be lost to a crash.
		for name, mode := range map[string]string{"db": "Async", "ledger": "Sync"} {
			tool(t, fmt.Sprintf(`apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata: {name: %s}
spec:
  replicas: 3
  storage: {size: 1Gi}
  replication: {mode: %s}
  bootstrap: {database: app, owner: app}
`, name, mode), "kubectl", "-n", ns, "apply", "-f", "-")
		}
		start = time.Now()
		for _, name := range []string{"db", "ledger"} {
			kubectl(t, "-n", ns, "wait", "dbrs/"+name, "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
		}
		t.Logf("both ReplicaSets were Healthy %s after they were applied", time.Since(start).Round(100*time.Millisecond))
		installed = true
	})
	if !installed {
		t.Fatal("the chart and the ReplicaSets are not installed (see the first test's failure)")
	}
}

// The chart's image is the one built from the Dockerfile, and every pod of
// the operator and of the cluster runs on a real node, admitted under the
// restricted Pod Security Standard.
func TestTheChartRunsTheImageBuiltFromTheDockerfileUnderTheRestrictedStandard(t *testing.T) {
	install(t)
	for _, n := range []string{operatorNS, ns} {
		pods, err := cs.CoreV1().Pods(n).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			t.Fatalf("no pod in %s", n)
		}
		for _, p := range pods.Items {
			node, err := cs.CoreV1().Nodes().Get(t.Context(), p.Spec.NodeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rt := node.Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(rt, "containerd://") {
				t.Errorf("pod %s/%s runs on %s, whose runtime is %q, not containerd", n, p.Name, node.Name, rt)
			}
			for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
				if strings.Contains(c.Image, "regent") && !strings.HasPrefix(c.ImageID, "sha256:") &&
					!strings.Contains(c.ImageID, "@sha256:") {
					t.Errorf("container %s of %s/%s has no image digest: %q", c.Name, n, p.Name, c.ImageID)
				}
			}
		}
	}
	// The binary in the image reports the version the image was built at.
	got := strings.TrimSpace(kubectl(t, "-n", operatorNS, "exec", "deploy/regent-regent", "--", "/usr/local/bin/regent", "version"))
	want, err := os.ReadFile(filepath.Join(root, "bin", "images", "regent.tar.names"))
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.Fields(string(want))[0]; !strings.HasSuffix(first, ":"+got) {
		t.Errorf("the operator's binary says version %q; the image built is %s", got, first)
	}
}

// A client inside a node's network namespace connects to db-leader by its
// DNS name (CoreDNS, then kube-proxy's rules for the Service's address)
// and writes; the leader pod is deleted; writes go on at the new leader,
// and every acknowledged row is there.
func TestClientsReachTheLeaderByItsServiceNameAcrossAFailover(t *testing.T) {
	install(t)
	writeAcross(t, "db", "deleting the leader pod", func(leader string) {
		kubectl(t, "-n", ns, "delete", "pod", leader, "--wait=false")
	})
}

// The leader's postgres container is killed (every process of its cgroup,
// as the kernel's OOM killer or a crash would): a follower leads, and in
// Sync mode every acknowledged write is there.
func TestACrashedLeaderIsReplacedWithoutLosingAcknowledgedWrites(t *testing.T) {
	install(t)
	writeAcross(t, "ledger", "killing the leader's postgres container", func(leader string) {
		tool(t, "", "localcluster", "--state", cfg.StateDir, "--cluster", cfg.NetNS, "fault", "kill", ns+"/"+leader, "postgres")
	})
}

// The leader pod is frozen (cgroup freezer: its processes stop, their
// connections stay open and unanswered): a follower leads; once thawed,
// the old leader follows, and no acknowledged write is lost.
func TestAFrozenLeaderIsReplacedWithoutLosingAcknowledgedWrites(t *testing.T) {
	install(t)
	var frozen string
	writeAcross(t, "ledger", "freezing the leader pod", func(leader string) {
		frozen = leader
		tool(t, "", "localcluster", "--state", cfg.StateDir, "--cluster", cfg.NetNS, "fault", "freeze", ns+"/"+leader)
	})
	tool(t, "", "localcluster", "--state", cfg.StateDir, "--cluster", cfg.NetNS, "fault", "thaw", ns+"/"+frozen)
	kubectl(t, "-n", ns, "wait", "dbrs/ledger", "--for=jsonpath={.status.phase}=Healthy", "--timeout=3m")
}

// writeAcross writes to cluster's leader Service by its DNS name from a
// node's network namespace, one row at a time with a new connection after
// any error (as an application's pool does), while fault(leader) breaks
// the leader; it waits for a new leader, checks every acknowledged row is
// there, and logs the longest gap between two acknowledgements.
func writeAcross(t *testing.T, cluster, what string, fault func(leader string)) {
	t.Helper()
	ctx := t.Context()
	secret, err := cs.CoreV1().Secrets(ns).Get(ctx, cluster+"-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s-leader.%s.svc.cluster.local port=5432 user=app dbname=app password=%s sslmode=require connect_timeout=2",
		cluster, ns, secret.Data["password"])
	connect := func(ctx context.Context) (*pgx.Conn, error) { return connectFromNode(ctx, dsn) }
	conn, err := connect(ctx)
	if err != nil {
		t.Fatalf("connect to %s-leader by its DNS name: %v", cluster, err)
	}
	table := fmt.Sprintf("acks_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	leaderOf := func() string {
		return strings.TrimSpace(kubectl(t, "-n", ns, "get", "dbrs/"+cluster, "-o", "jsonpath={.status.leader}"))
	}
	old := leaderOf()

	var acked []int64
	var worst time.Duration
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var c *pgx.Conn
		last := time.Now()
		for id := int64(1); wctx.Err() == nil; id++ {
			if c == nil {
				cc, err := connect(wctx)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				c = cc
			}
			// A frozen leader answers nothing: give up on it as a client's
			// statement timeout would.
			ectx, cancel := context.WithTimeout(wctx, 2*time.Second)
			_, err := c.Exec(ectx, "INSERT INTO "+table+" VALUES ($1)", id)
			cancel()
			if err != nil {
				_ = c.Close(context.Background())
				c = nil
				continue
			}
			worst = max(worst, time.Since(last))
			last = time.Now()
			acked = append(acked, id)
			time.Sleep(10 * time.Millisecond)
		}
		if c != nil {
			_ = c.Close(context.Background())
		}
	}()
	time.Sleep(3 * time.Second)
	fault(old)
	waitfor.Condition(t, 2*time.Minute, "a new leader", func() error {
		if l := leaderOf(); l == "" || l == old {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	stop()
	<-done
	t.Logf("%s (%s of %s): %d writes acknowledged through %s-leader's DNS name; the longest gap between two was %s",
		what, old, cluster, len(acked), cluster, worst.Round(time.Millisecond))
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
	conn, err = connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var have int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = ANY($1)", acked).Scan(&have); err != nil {
		t.Fatal(err)
	}
	if have != int64(len(acked)) {
		t.Errorf("%d of %d acknowledged rows are at the new leader", have, len(acked))
	}
}

// kubectl logs, exec and port-forward reach a database pod through its
// node's kubelet.
func TestKubectlLogsExecAndPortForwardReachThePods(t *testing.T) {
	install(t)
	leader := strings.TrimSpace(kubectl(t, "-n", ns, "get", "dbrs/db", "-o", "jsonpath={.status.leader}"))
	if logs := kubectl(t, "-n", ns, "logs", leader, "-c", "postgres", "--tail=50"); !strings.Contains(logs, "instance") {
		t.Errorf("kubectl logs %s -c postgres shows no line of the instance:\n%s", leader, logs)
	}
	if out := kubectl(t, "-n", ns, "exec", leader, "-c", "postgres", "--", "pg_isready", "-h", "/regent/run"); !strings.Contains(out, "accepting connections") {
		t.Errorf("pg_isready in the postgres container: %s", out)
	}
	// port-forward: the leader's PostgreSQL on a port of this host.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	pf := exec.Command(filepath.Join(root, "bin", "kubectl"), "-n", ns, "port-forward", "pod/"+leader,
		fmt.Sprintf("%d:5432", port), "--address=127.0.0.1")
	pf.Env = append(os.Environ(), "KUBECONFIG="+cfg.AdminKubeconfig())
	var pfOut bytes.Buffer
	pf.Stdout, pf.Stderr = &pfOut, &pfOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	secret, err := cs.CoreV1().Secrets(ns).Get(t.Context(), "db-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 30*time.Second, "a query through kubectl port-forward", func() error {
		c, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=app password=%s sslmode=require connect_timeout=2",
			port, secret.Data["password"]))
		if err != nil {
			return fmt.Errorf("%w (%s)", err, strings.TrimSpace(pfOut.String()))
		}
		defer c.Close(t.Context())
		var one int
		return c.QueryRow(t.Context(), "SELECT 1").Scan(&one)
	})
}

// connectFromNode connects with dsn from inside the first node's network
// namespace, resolving names with the cluster's DNS as a pod there would.
func connectFromNode(ctx context.Context, dsn string) (*pgx.Conn, error) {
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	node := cfg.NodeNetNS(1)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return netns.Dial(ctx, node, network, net.JoinHostPort(cluster.ClusterDNS, "53"))
	}}
	c.LookupFunc = resolver.LookupHost
	c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.Dial(ctx, node, network, addr)
	}
	return pgx.ConnectConfig(ctx, c)
}
