package localcluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/pki"
	"github.com/regent-dev/regent/internal/waitfor"
)

// The pods/log API (what kubectl logs calls) reaches the node's API through
// the API server and returns what the container wrote, on both streams,
// with the options a user passes: tail, timestamps, the previous instance,
// follow.
func TestPodLogsServeTheContainersOutput(t *testing.T) {
	ns := newNamespace(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "talker"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "main", Image: "busybox",
				Command: []string{"sh", "-c", `echo "started at $(date +%s%N)"; echo "a line on stderr" >&2; ` +
					`printf 'no end of line'; sleep 1; echo; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done`},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	logs := func(opts corev1.PodLogOptions) (string, error) {
		b, err := cs.CoreV1().Pods(ns).GetLogs("talker", &opts).DoRaw(t.Context())
		return string(b), err
	}
	var first string
	waitfor.Condition(t, 60*time.Second, "the first ticks in the log", func() error {
		out, err := logs(corev1.PodLogOptions{})
		if err != nil {
			return err
		}
		if !strings.Contains(out, "tick 2\n") {
			return fmt.Errorf("log so far: %q", out)
		}
		first = out
		return nil
	})
	for _, want := range []string{"started at ", "a line on stderr\n", "no end of line\n"} {
		if !strings.Contains(first, want) {
			t.Errorf("the log misses %q:\n%s", want, first)
		}
	}
	// The two streams are two pipes: their lines interleave in any order.
	var started string
	for l := range strings.Lines(first) {
		if strings.HasPrefix(l, "started at ") {
			started = strings.TrimSuffix(l, "\n")
		}
	}

	out, err := logs(corev1.PodLogOptions{TailLines: ptr.To[int64](1), Timestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	stamp, line, _ := strings.Cut(strings.TrimSuffix(out, "\n"), " ")
	if at, err := time.Parse(time.RFC3339Nano, stamp); err != nil || time.Since(at) > time.Minute ||
		!strings.HasPrefix(line, "tick ") || strings.Contains(line, "\n") {
		t.Errorf("--tail=1 --timestamps gave %q", out)
	}

	// Follow: new lines arrive as they are written.
	req := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Follow: true, TailLines: ptr.To[int64](0)})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	stream, err := req.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stream)
	for range 3 {
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "tick ") {
			t.Errorf("followed line %q, %v", l, err)
		}
	}
	cancel()
	_ = stream.Close()

	// A restart starts a new instance; --previous shows the one before.
	if pod, err = cs.CoreV1().Pods(ns).Get(t.Context(), "talker", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cgroup.For(cfg.NetNS, pod.Spec.NodeName, string(pod.UID), "main").Kill(); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 60*time.Second, "the restarted instance's log", func() error {
		out, err := logs(corev1.PodLogOptions{})
		if err != nil {
			return err
		}
		if strings.Contains(out, started) || !strings.Contains(out, "started at ") {
			return fmt.Errorf("current log %q", out)
		}
		return nil
	})
	if out, err := logs(corev1.PodLogOptions{Previous: true}); err != nil || !strings.Contains(out, started+"\n") {
		t.Errorf("--previous gave %q, %v; want the first instance's log, from %q", out, err, started)
	}
	if out, err := logs(corev1.PodLogOptions{Container: "other"}); err == nil ||
		!strings.Contains(out, "container other is not valid for pod talker") {
		t.Errorf("logs of a container the pod does not have: %q, %v", out, err)
	}
}

// The node's API answers only clients of the cluster's CA whom the API
// server authorizes: a certificate of a user without rights is refused.
func TestNodeAPIRefusesAUserWithoutRights(t *testing.T) {
	pkiDir := filepath.Join(cfg.StateDir, "pki")
	ca, err := pki.LoadOrCreateCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	nobody := pki.PathsFor(t.TempDir(), "nobody")
	if err := ca.Issue(nobody, pki.Request{CommonName: "nobody"}); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	call := func(certs []tls.Certificate) (int, string, error) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return netns.Dial(ctx, cfg.NetNS, network, addr)
			},
		}}
		resp, err := client.Get(fmt.Sprintf("https://10.244.1.254:%d/healthz", cluster.KubeletPort))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	pair, err := tls.LoadX509KeyPair(nobody.Cert, nobody.Key)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := call([]tls.Certificate{pair}); err != nil || code != http.StatusForbidden {
		t.Errorf("a user without rights: %d %q, %v; want 403", code, body, err)
	}
	if code, _, err := call(nil); err == nil {
		t.Errorf("no client certificate: answered %d", code)
	}
	_ = os.Remove(nobody.Key)
}
