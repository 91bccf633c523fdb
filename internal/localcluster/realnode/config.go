// Package realnode runs a real node of the local cluster: the pinned
// kubelet and kube-proxy over a containerd of the node's own (runc, CNI
// bridge networking), in a network namespace and a mount namespace of the
// node's own, as a kind node runs in a container (docs/local-cluster.md,
// "Real nodes").
package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// Node is one real node: where it lives, its addresses, and what it
// connects to.
type Node struct {
	// Name is the Node's name (local-1, …).
	Name string
	// Zone is its topology.kubernetes.io/zone label.
	Zone string
	// Dir holds the node's configuration, containerd's and the kubelet's
	// data, and its logs.
	Dir string
	// BinDir holds kubelet, kube-proxy (and containerd's tools come from
	// the machine's packages).
	BinDir string
	// NetNS is the node's network namespace.
	NetNS string
	// IP is the node's address (its InternalIP, where the kubelet serves).
	IP string
	// PodCIDR is the range its pods take addresses from.
	PodCIDR string
	// ClusterCIDR is every node's pod range together (kube-proxy).
	ClusterCIDR string
	// ClusterDNS is the kube-dns Service's address.
	ClusterDNS string
	// Kubeconfig is the kubelet's, ProxyKubeconfig kube-proxy's.
	Kubeconfig, ProxyKubeconfig string
	// CAFile verifies clients of the kubelet's API; ServingCert and
	// ServingKey are its certificate, for the node's IP.
	CAFile, ServingCert, ServingKey string
	// Images are OCI archives imported into containerd at start, each
	// with a "<archive>.names" file listing the names it is known by.
	Images []string
	// PauseImage is the pod sandbox's image (one of Images).
	PauseImage string
	// CgroupRoot is the cgroup (in every v1 hierarchy) that holds all of
	// the node's pods, so that nodes do not share one.
	CgroupRoot string
	// HeartbeatPausedFile stops the node's kubelet (SIGSTOP) while it
	// exists: the node stops reporting, its pods run on (a fault).
	HeartbeatPausedFile string
}

func (n Node) socket() string           { return filepath.Join(n.Dir, "containerd.sock") }
func (n Node) logDir() string           { return filepath.Join(n.Dir, "logs") }
func (n Node) cniDir() string           { return filepath.Join(n.Dir, "cni") }
func (n Node) containerdConfig() string { return filepath.Join(n.Dir, "containerd.toml") }
func (n Node) kubeletConfig() string    { return filepath.Join(n.Dir, "kubelet.yaml") }
func (n Node) proxyConfig() string      { return filepath.Join(n.Dir, "kube-proxy.yaml") }

// Socket is the node's containerd socket (for ctr and crictl).
func (n Node) Socket() string { return n.socket() }

// PodLogDir is where the kubelet keeps its containers' logs.
func (n Node) PodLogDir() string { return filepath.Join(n.Dir, "pod-logs") }

// WriteConfig writes containerd's, the CNI's, the kubelet's and
// kube-proxy's configuration files into the node's directory.
func (n Node) WriteConfig() error {
	for _, d := range []string{n.Dir, n.logDir(), n.cniDir(), n.PodLogDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := map[string]*template.Template{
		n.containerdConfig():                          containerdTOML,
		filepath.Join(n.cniDir(), "10-pods.conflist"): cniConflist,
		n.kubeletConfig():                             kubeletYAML,
		n.proxyConfig():                               proxyYAML,
	}
	for path, t := range files {
		var b strings.Builder
		if err := t.Execute(&b, n); err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// containerd: everything under the node's directory, or under /run, which
// is the node's own (a tmpfs in its mount namespace). The sandbox's OOM
// score is capped at containerd's own: lowering it needs CAP_SYS_RESOURCE,
// which this machine does not give.
var containerdTOML = template.Must(template.New("containerd").Parse(`version = 2
root = "{{.Dir}}/containerd"
state = "/run/containerd"
[grpc]
  address = "{{.Dir}}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.PauseImage}}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{.Dir}}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`))

// The pods' network: a bridge per node, its pods' range routed to the node
// by the cluster's namespace (no overlay, no NAT inside the cluster).
var cniConflist = template.Must(template.New("cni").Parse(`{
  "cniVersion": "0.4.0",
  "name": "regent-local",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`))

// The kubelet: webhook authentication and authorization as on any cluster,
// cgroupfs under the node's own root (cgroup v1: this machine's
// controllers are bound to v1 hierarchies), no swap check, and eviction
// thresholds low enough for a shared disk.
var kubeletYAML = template.Must(template.New("kubelet").Parse(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {{.IP}}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{.CAFile}}}
authorization: {mode: Webhook}
tlsCertFile: {{.ServingCert}}
tlsPrivateKeyFile: {{.ServingKey}}
cgroupDriver: cgroupfs
cgroupRoot: /{{.CgroupRoot}}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{{.Dir}}/containerd.sock
podLogsDir: {{.Dir}}/pod-logs
clusterDomain: cluster.local
clusterDNS: [{{.ClusterDNS}}]
resolvConf: ""
podCIDR: {{.PodCIDR}}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
`))

// kube-proxy: iptables mode in the node's namespace; it leaves the
// machine-wide conntrack sizes alone (they are not the node's to set).
var proxyYAML = template.Must(template.New("kube-proxy").Parse(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: {{.ProxyKubeconfig}}}
hostnameOverride: {{.Name}}
bindAddress: {{.IP}}
clusterCIDR: {{.ClusterCIDR}}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`))
