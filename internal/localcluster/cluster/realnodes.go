package cluster

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/realnode"
)

// prepareRealNodes checks the images are built, then wires each node's
// network namespace to the cluster's and writes its configuration.
func (c Config) prepareRealNodes() error {
	for _, img := range realImages {
		if imageName(c.ImagesDir, img) == "" {
			return fmt.Errorf("image %s is not built in %s: run make images (hack/images.sh)", img, c.ImagesDir)
		}
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, realNodesMarker)); err != nil {
		if _, running := c.running("kube-apiserver"); running {
			return fmt.Errorf("the cluster runs process kubelets: stop it first (localcluster down)")
		}
	}
	if err := os.WriteFile(filepath.Join(c.StateDir, realNodesMarker), nil, 0o600); err != nil {
		return err
	}
	if err := shareMounts(c.volumeDir()); err != nil {
		return err
	}
	// Only the control plane's range is local: each node's pod range is
	// routed to the node.
	if err := netns.EnsureLocal(c.NetNS, netns.ControlPlaneCIDR); err != nil {
		return err
	}
	for i := 1; i <= c.Nodes; i++ {
		n := c.realNode(i)
		if err := realnode.Connect(c.NetNS, n, "vn-"+n.Name); err != nil {
			return fmt.Errorf("node %s's network: %w", n.Name, err)
		}
		if err := n.WriteConfig(); err != nil {
			return fmt.Errorf("node %s's configuration: %w", n.Name, err)
		}
		b, err := json.MarshalIndent(n, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "node.json"), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

//go:embed coredns.yaml
var corednsYAML string

// deployDNS runs CoreDNS, the cluster's DNS (Service kube-dns at
// ClusterDNS), and waits until it answers.
func (c Config) deployDNS(ctx context.Context, logf func(string, ...any)) error {
	var manifest bytes.Buffer
	err := template.Must(template.New("coredns").Parse(corednsYAML)).Execute(&manifest, map[string]string{
		"Image": imageName(c.ImagesDir, "coredns"), "ClusterDNS": ClusterDNS,
	})
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), "--kubeconfig", c.AdminKubeconfig(),
		"apply", "--server-side", "--force-conflicts", "-f", "-")
	cmd.Stdin = &manifest
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("deploy CoreDNS: %w: %s", err, strings.TrimSpace(string(out)))
	}
	cs, err := c.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas > 0 && d.Status.ReadyReplicas == d.Status.Replicas {
			logf("cluster DNS ready (kube-dns at %s)", ClusterDNS)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CoreDNS is not ready after 120s: kubectl -n kube-system describe pods -l k8s-app=kube-dns")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// shareMounts makes dir a shared mount, so that the volumes the
// provisioner mounts under it after the nodes started reach the nodes'
// mount namespaces (this machine's root mount propagates nothing).
func shareMounts(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if sharedMount(dir) {
		return nil
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("share %s: %w", dir, err)
	}
	return nil
}

// sharedMount reports whether dir is a mount point that propagates its
// mounts.
func sharedMount(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// id parent major:minor root mountpoint options optional... - ...
		if len(f) > 6 && f[4] == dir {
			for _, opt := range f[6:] {
				if opt == "-" {
					break
				}
				if strings.HasPrefix(opt, "shared:") {
					return true
				}
			}
		}
	}
	return false
}

// unshareMounts undoes shareMounts once the volumes are unmounted.
func unshareMounts(dir string) {
	for sharedMount(dir) {
		if unix.Unmount(dir, 0) != nil {
			return
		}
	}
}
