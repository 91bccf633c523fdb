// Package clustertest runs a test binary against a local cluster of its
// own: the TestMain of the local cluster's tests and of the end-to-end
// tests, which start, check and stop a cluster the same way.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/provisioner"
)

// Options say how to run the cluster.
type Options struct {
	// Root is the repository's root; its bin/ holds the tools.
	Root string
	// Name prefixes the state directory and the network namespace.
	Name string
	// Tools must be in bin/ (`make test` builds them).
	Tools []string
	// RealNodes runs real kubelets over containerd (the images of
	// hack/images.sh must be in bin/images).
	RealNodes bool
	// BeforeDown, when set, runs before the cluster stops and returns a
	// check to run after: the failures it lists fail the test binary.
	BeforeDown func(cfg cluster.Config) (afterDown func() []string)
}

// Main starts a 3-node local cluster, gives its configuration and a client
// to ready, runs the tests, stops the cluster and returns the exit code.
// The state directory (logs of every component and pod) stays when
// anything failed. Without root it skips everything.
func Main(m *testing.M, opts Options, ready func(cluster.Config, *kubernetes.Clientset)) int {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP: the local cluster needs root (network namespaces, cgroups, mounts)")
		return 0
	}
	bin := filepath.Join(opts.Root, "bin")
	for _, b := range opts.Tools {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "%s missing in %s: run the tests with `make test`\n", b, bin)
			return 1
		}
	}
	state, err := os.MkdirTemp("", "regent-"+opts.Name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := cluster.Config{
		StateDir: state, BinDir: bin, NetNS: fmt.Sprintf("regent-%s-%d", opts.Name, os.Getpid()),
		HostPort: port, Nodes: 3, ImageMap: filepath.Join(opts.Root, "hack", "local", "images.yaml"),
		RealNodes: opts.RealNodes, ImagesDir: filepath.Join(bin, "images"),
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "[cluster] "+f+"\n", a...) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := cluster.Up(ctx, cfg, logf); err != nil {
		fmt.Fprintln(os.Stderr, "cluster up:", err)
		_ = cluster.Down(cfg, logf)
		return 1
	}
	code := 1
	defer func() {
		var afterDown func() []string
		if opts.BeforeDown != nil {
			afterDown = opts.BeforeDown(cfg)
		}
		if err := cluster.Down(cfg, logf); err != nil {
			fmt.Fprintln(os.Stderr, "cluster down:", err)
			code = 1
		}
		if afterDown != nil {
			for _, f := range afterDown() {
				fmt.Fprintln(os.Stderr, "FAIL:", f)
				code = 1
			}
		}
		// REGENT_KEEP_LOGS keeps them after a pass too, to read a run's timeline.
		if code == 0 && os.Getenv("REGENT_KEEP_LOGS") == "" {
			_ = os.RemoveAll(state)
		} else {
			fmt.Fprintln(os.Stderr, "logs kept in", filepath.Join(state, "logs"), "and", filepath.Join(state, "nodes"))
		}
	}()
	kc, err := clientcmd.BuildConfigFromFlags("", cfg.AdminKubeconfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(kc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := provisioner.EnsureStorageClass(ctx, cs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ready(cfg, cs)
	code = m.Run()
	return code
}

// freePort is a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
