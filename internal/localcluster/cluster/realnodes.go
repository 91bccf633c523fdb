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
// clusterDNS), and waits until it answers.
func (c Config) deployDNS(ctx context.Context, logf func(string, ...any)) error {
	var manifest bytes.Buffer
	err := template.Must(template.New("coredns").Parse(corednsYAML)).Execute(&manifest, map[string]string{
		"Image": imageName(c.ImagesDir, "coredns"), "ClusterDNS": clusterDNS,
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
			logf("cluster DNS ready (kube-dns at %s)", clusterDNS)
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
