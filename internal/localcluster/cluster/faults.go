package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/netfault"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/realnode"
)

// The faults the tests and `localcluster fault` inject, on either kind of
// node: a process node's pods are cgroups (v2) of the localcluster's own
// in the cluster's one network namespace; a real node's pods are the
// kubelet's cgroups (v1) with a network namespace each.

// Endpoint resolves one side of a partition: "apiserver", or a pod as
// [NAMESPACE/]NAME (on a process node its cgroup's connection mark, on a
// real node its own network namespace; and its IP).
func (c Config) Endpoint(ctx context.Context, cs kubernetes.Interface, ref string) (netfault.Endpoint, error) {
	if ref == "apiserver" {
		e := netfault.Endpoint{Name: ref, Addrs: []netip.Addr{netip.MustParseAddr(APIServerIP)}}
		if c.RealNodes {
			// A real node's pods reach it through the kubernetes Service,
			// translated in the node's namespace, outside the pod's.
			e.Addrs = append(e.Addrs, netip.MustParseAddr(kubernetesSvc))
		}
		return e, nil
	}
	ns, name := "default", ref
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		ns, name = ref[:i], ref[i+1:]
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return netfault.Endpoint{}, err
	}
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if pod.Spec.NodeName == "" || err != nil {
		return netfault.Endpoint{}, fmt.Errorf("pod %s/%s has no node or address yet", ns, name)
	}
	e := netfault.Endpoint{Name: ns + "/" + name, Addrs: []netip.Addr{ip}}
	if c.RealNodes {
		rel, err := realnode.PodCgroup(c.NodeCgroupRoot(pod.Spec.NodeName), string(pod.UID))
		if err != nil {
			return netfault.Endpoint{}, err
		}
		if e.NetNS, err = realnode.NetNSOf(rel); err != nil {
			return netfault.Endpoint{}, fmt.Errorf("pod %s/%s's network namespace: %w", ns, name, err)
		}
		return e, nil
	}
	if e.Mark, err = netfault.MarkOf(string(cgroup.For(c.NetNS, pod.Spec.NodeName, string(pod.UID)))); err != nil {
		return netfault.Endpoint{}, fmt.Errorf("pod %s/%s's cgroup: %w", ns, name, err)
	}
	return e, nil
}

// Partition cuts every connection between a and b (see netfault) under
// name, until Heal(name).
func (c Config) Partition(name string, a, b []netfault.Endpoint) error {
	return netfault.Partition(netns.Path(c.NetNS), name, a, b)
}

// Heal removes partition name, or every partition when name is "".
func (c Config) Heal(name string) error {
	found := false
	for _, path := range c.faultNamespaces() {
		in, err := netfault.Partitions(path)
		if err != nil || (name != "" && !slices.Contains(in, name)) {
			continue // a pod's namespace no partition ever cut
		}
		found = true
		if err := netfault.Heal(path, name); err != nil {
			return err
		}
	}
	if name != "" && !found {
		in, _ := c.Partitions()
		return fmt.Errorf("no partition %s in force (%s)", name, strings.Join(in, ", "))
	}
	return nil
}

// Partitions lists the partitions in force, by name.
func (c Config) Partitions() ([]string, error) {
	var out []string
	for i, path := range c.faultNamespaces() {
		in, err := netfault.Partitions(path)
		if err != nil {
			if i == 0 && !c.RealNodes {
				return nil, err
			}
			continue
		}
		for _, n := range in {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// faultNamespaces are the network namespaces a partition may have rules
// in: the cluster's, and on real nodes every pod's.
func (c Config) faultNamespaces() []string {
	out := []string{netns.Path(c.NetNS)}
	for i := 1; i <= c.Nodes && c.RealNodes; i++ {
		out = append(out, realnode.PodNetNSs(c.NodeCgroupRoot(NodeName(i)))...)
	}
	return out
}

// Kill sends SIGKILL to every process of pod's container (of the whole pod
// when container is ""), as a crash would.
func (c Config) Kill(pod *corev1.Pod, container string) error {
	if !c.RealNodes {
		return c.processPodGroup(pod, container).Kill()
	}
	rel, err := c.realPodCgroup(pod, container)
	if err != nil {
		return err
	}
	return realnode.Kill(rel)
}

// Freeze stops (frozen false: lets go on) every process of pod's container,
// or of the whole pod when container is "", with the cgroup freezer.
func (c Config) Freeze(pod *corev1.Pod, container string, frozen bool) error {
	if !c.RealNodes {
		return c.processPodGroup(pod, container).Freeze(frozen)
	}
	rel, err := c.realPodCgroup(pod, container)
	if err != nil {
		return err
	}
	return realnode.Freeze(rel, frozen)
}

func (c Config) processPodGroup(pod *corev1.Pod, container string) cgroup.Group {
	g := cgroup.For(c.NetNS, pod.Spec.NodeName, string(pod.UID))
	if container != "" {
		g = cgroup.Group(filepath.Join(string(g), container))
	}
	return g
}

// realPodCgroup is the v1 cgroup, relative to each hierarchy, of pod's
// container (the kubelet names it by the container's ID), or of the pod.
func (c Config) realPodCgroup(pod *corev1.Pod, container string) (string, error) {
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled", pod.Namespace, pod.Name)
	}
	rel, err := realnode.PodCgroup(c.NodeCgroupRoot(pod.Spec.NodeName), string(pod.UID))
	if err != nil || container == "" {
		return rel, err
	}
	for _, st := range append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...) {
		if _, id, ok := strings.Cut(st.ContainerID, "://"); ok && st.Name == container && st.State.Running != nil {
			return filepath.Join(rel, id), nil
		}
	}
	return "", fmt.Errorf("pod %s/%s has no running container %q", pod.Namespace, pod.Name, container)
}
