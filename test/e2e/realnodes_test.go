package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/waitfor"
)

// What only real nodes have: images, a container runtime, the kubelet's
// streaming API, kube-proxy and cluster DNS.

// serviceByName serves l until ctx ends: each connection is forwarded to
// svc of namespace by its DNS name from inside the first node's network
// namespace, as a pod there would connect. The name is resolved with the
// cluster's DNS (CoreDNS) for each connection, and the Service's address
// it gives is translated to a ready endpoint by kube-proxy's rules.
func serviceByName(ctx context.Context, l net.Listener, namespace, svc string) error {
	addr := net.JoinHostPort(svc+"."+namespace+".svc.cluster.local", "5432")
	return netns.Forward(ctx, l, func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return dialFromNode(ctx, addr)
	})
}

// nodeResolver resolves names with the cluster's DNS, from inside the
// first node's network namespace.
var nodeResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
	return netns.Dial(ctx, cfg.NodeNetNS(1), network, net.JoinHostPort(cluster.ClusterDNS, "53"))
}}

// dialFromNode connects to addr (host:port, the host a cluster name) from
// inside the first node's network namespace.
func dialFromNode(ctx context.Context, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := nodeResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("cluster DNS: %w", err)
	}
	return netns.Dial(ctx, cfg.NodeNetNS(1), "tcp", net.JoinHostPort(ips[0], port))
}

// On real nodes: the chart's image is the one built from the Dockerfile,
// every pod of the operator and of a cluster runs on a containerd node,
// admitted under the restricted Pod Security Standard; and kubectl logs,
// exec and port-forward reach a database pod through its node's kubelet.
func TestRealNodesRunTheImagesBuiltHereAndServeKubectl(t *testing.T) {
	if !realNodes {
		t.Skip("real nodes only (REGENT_REAL_NODES=1)")
	}
	const rns = "e2e-nodes"
	createHealthyCluster(t, rns, "mode: Async")
	dropWhenDone(t, rns)

	t.Run("the chart runs the image built from the Dockerfile under the restricted standard", func(t *testing.T) {
		for _, n := range []string{"regent-system", rns} {
			if got := kubectl(t, "get", "namespace", n, "-o", "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}"); got != "restricted" {
				t.Fatalf("namespace %s enforces %q, want restricted", n, got)
			}
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
					if !strings.HasPrefix(c.ImageID, "sha256:") && !strings.Contains(c.ImageID, "@sha256:") {
						t.Errorf("container %s of %s/%s has no image digest: %q", c.Name, n, p.Name, c.ImageID)
					}
				}
			}
		}
		// The binary in the image reports the version the image was built at.
		got := strings.TrimSpace(kubectl(t, "-n", "regent-system", "exec", "deploy/regent-regent", "--", "/usr/local/bin/regent", "version"))
		want, err := os.ReadFile(filepath.Join(root, "bin", "images", "regent.tar.names"))
		if err != nil {
			t.Fatal(err)
		}
		if first := strings.Fields(string(want))[0]; !strings.HasSuffix(first, ":"+got) {
			t.Errorf("the operator's binary says version %q; the image built is %s", got, first)
		}
	})

	t.Run("kubectl logs, exec and port-forward reach the pods", func(t *testing.T) {
		leader := fieldIn(t, rns, ".status.leader")
		if logs := kubectl(t, "-n", rns, "logs", leader, "-c", "postgres", "--tail=50"); !strings.Contains(logs, "instance") {
			t.Errorf("kubectl logs %s -c postgres shows no line of the instance:\n%s", leader, logs)
		}
		if out := kubectl(t, "-n", rns, "exec", leader, "-c", "postgres", "--", "pg_isready", "-h", "/regent/run"); !strings.Contains(out, "accepting connections") {
			t.Errorf("pg_isready in the postgres container: %s", out)
		}
		// port-forward: the leader's PostgreSQL on a port of this host.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		pf := exec.Command(filepath.Join(root, "bin", "kubectl"), "-n", rns, "port-forward", "pod/"+leader,
			fmt.Sprintf("%d:5432", port), "--address=127.0.0.1")
		pf.Env = append(os.Environ(), "KUBECONFIG="+cfg.AdminKubeconfig())
		var pfOut bytes.Buffer
		pf.Stdout, pf.Stderr = &pfOut, &pfOut
		if err := pf.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
		secret, err := cs.CoreV1().Secrets(rns).Get(t.Context(), "db-app", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitfor.Condition(t, 30*time.Second, "a query through kubectl port-forward", func() error {
			c, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s password=%s sslmode=require connect_timeout=2",
				port, secret.Data["user"], secret.Data["dbname"], secret.Data["password"]))
			if err != nil {
				return fmt.Errorf("%w (%s)", err, strings.TrimSpace(pfOut.String()))
			}
			defer c.Close(t.Context())
			var one int
			return c.QueryRow(t.Context(), "SELECT 1").Scan(&one)
		})
	})
}
