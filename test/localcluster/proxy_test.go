package localcluster_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/proxy"

	"github.com/regent-dev/regent/internal/waitfor"
)

func TestServiceProxyFollowsTheSelector(t *testing.T) {
	ns := newNamespace(t)
	for _, name := range []string{"a", "b"} {
		if _, err := cs.CoreV1().Pods(ns).Create(t.Context(), webPod(ns, name, map[string]string{"pod": name}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPodReady(t, ns, "a")
	waitPodReady(t, ns, "b")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"pod": "a"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := &proxy.Proxy{Client: cs, Namespace: ns, Service: "web", Port: "http", Log: logr.Discard(),
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return netns.Dial(ctx, cfg.NetNS, "tcp", addr)
		}}
	go func() { _ = p.Serve(ctx, l) }()

	through := func(ctx context.Context) (string, error) {
		client := (&net.Dialer{})
		conn, err := client.DialContext(ctx, "tcp", l.Addr().String())
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n"); err != nil {
			return "", err
		}
		b, err := io.ReadAll(conn)
		if err != nil {
			return "", err
		}
		body := string(b)
		if _, after, ok := strings.Cut(body, "\r\n\r\n"); ok {
			body = after
		}
		return strings.TrimSpace(body), nil
	}
	waitfor.Condition(t, 30*time.Second, "proxy serves pod a", func() error {
		body, err := through(t.Context())
		if err != nil {
			return err
		}
		if body != "a" {
			return fmt.Errorf("got %q", body)
		}
		return nil
	})

	// A connection held open to pod a stays open when a leaves, as
	// kube-proxy keeps established flows.
	waitfor.Condition(t, 5*time.Second, "earlier connections closed", func() error {
		if n := p.Connections(); n != 0 {
			return fmt.Errorf("%d connections piped", n)
		}
		return nil
	})
	held, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	waitfor.Condition(t, 5*time.Second, "held connection piped to pod a", func() error {
		if n := p.Connections(); n != 1 {
			return fmt.Errorf("%d connections piped", n)
		}
		return nil
	})

	svc, err = cs.CoreV1().Services(ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = map[string]string{"pod": "b"}
	if _, err := cs.CoreV1().Services(ns).Update(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 30*time.Second, "proxy serves pod b", func() error {
		body, err := through(t.Context())
		if err != nil {
			return err
		}
		if body != "b" {
			return fmt.Errorf("got %q", body)
		}
		return nil
	})
	if _, err := fmt.Fprintf(held, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatalf("the connection held to the endpoint that left: %v", err)
	}
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(held)
	if err != nil {
		t.Fatalf("the connection held to the endpoint that left: %v", err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(b)), "a") {
		t.Errorf("the connection held to pod a answered %q after a left; want pod a's answer", b)
	}
}
