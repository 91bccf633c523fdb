package realnode

import (
	"fmt"
	"os/exec"
	"strings"
)

// The nodes' network: a bridge in the cluster's namespace, each node's
// eth0 on it (NodesCIDR), and each node's pod range routed to the node.
const (
	bridge = "nodes0"
	// Gateway is the cluster namespace's address on the nodes' bridge:
	// every node's default route.
	Gateway   = "10.245.0.1"
	nodesMask = "/24"
)

// NodeIP is the address of node i (from 1).
func NodeIP(i int) string { return fmt.Sprintf("10.245.0.%d", 10+i) }

// Connect creates the node's network namespace (if needed) and wires it
// to the cluster's: a veth pair, the node's address and default route,
// and the route to its pods. It is harmless on a wired node.
func Connect(clusterNS string, n Node, hostSide string) error {
	steps := [][]string{
		{"-n", clusterNS, "link", "add", bridge, "type", "bridge"},
		{"-n", clusterNS, "addr", "add", Gateway + nodesMask, "dev", bridge},
		{"-n", clusterNS, "link", "set", bridge, "up"},
		{"netns", "add", n.NetNS},
		{"-n", n.NetNS, "link", "set", "lo", "up"},
		{"-n", clusterNS, "link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", n.NetNS},
		{"-n", clusterNS, "link", "set", hostSide, "master", bridge, "up"},
		{"-n", n.NetNS, "addr", "add", n.IP + nodesMask, "dev", "eth0"},
		{"-n", n.NetNS, "link", "set", "eth0", "up"},
		{"-n", n.NetNS, "route", "replace", "default", "via", Gateway},
		{"-n", clusterNS, "route", "replace", n.PodCIDR, "via", n.IP},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil && !strings.Contains(err.Error(), "File exists") && !strings.Contains(err.Error(), "already assigned") {
			return err
		}
	}
	// Both namespaces route; the node's bridged pod traffic goes through
	// its iptables, as kube-proxy needs for a Service whose endpoint is
	// on the same bridge.
	for ns, keys := range map[string][]string{
		clusterNS: {"net.ipv4.ip_forward=1"},
		n.NetNS:   {"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"},
	} {
		for _, k := range keys {
			out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "sysctl", "-qw", k).CombinedOutput()
			if err != nil {
				return fmt.Errorf("sysctl %s in %s: %w: %s", k, ns, err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}

// Disconnect removes the node's network namespace (its veth pair goes with
// it) and the route to its pods.
func Disconnect(clusterNS string, n Node) {
	_ = ip("-n", clusterNS, "route", "del", n.PodCIDR)
	_ = ip("netns", "del", n.NetNS)
}

// Command returns the command that runs argv as the node n: inside its
// network namespace, in a new mount namespace whose mounts (the node's
// /run, its containers' roots and volumes) are its own and go with it,
// while it still sees the machine's later mounts (the cluster's volumes).
func Command(n Node, argv ...string) *exec.Cmd {
	args := append([]string{"--net=/run/netns/" + n.NetNS, "--", "unshare", "--mount", "--propagation", "slave", "--"}, argv...)
	return exec.Command("nsenter", args...)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
