// Command localcluster runs a Kubernetes cluster made of local processes
// (../../docs/local-cluster.md): `up`, `down` and `status` for people and
// the Makefile; `kubelet`, `provisioner`, `forward` and `run-container` are
// the cluster's own processes; `proxy` publishes a Service on 127.0.0.1;
// `fault` breaks things on purpose for tests and demos.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/stdr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/regent-dev/regent/internal/localcluster/cluster"
	"github.com/regent-dev/regent/internal/localcluster/kubelet"
	"github.com/regent-dev/regent/internal/localcluster/netfault"
	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/localcluster/provisioner"
	"github.com/regent-dev/regent/internal/localcluster/proxy"
	"github.com/regent-dev/regent/internal/localcluster/realnode"
	lcruntime "github.com/regent-dev/regent/internal/localcluster/runtime"
)

func main() {
	root := &cobra.Command{
		Use:           "localcluster",
		Short:         "A Kubernetes cluster made of local processes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cfg := defaultConfig()
	pf := root.PersistentFlags()
	pf.StringVar(&cfg.StateDir, "state", cfg.StateDir, "state directory: certificates, kubeconfigs, logs, data")
	pf.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "directory of etcd, kube-apiserver, ... and localcluster")
	pf.StringVar(&cfg.NetNS, "cluster", cfg.NetNS, "cluster name: its network namespace and cgroup")
	pf.IntVar(&cfg.HostPort, "port", cfg.HostPort, "port of the API server on 127.0.0.1")
	pf.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "number of nodes")
	pf.StringVar(&cfg.ImageMap, "image-map", cfg.ImageMap, "image map file")
	pf.BoolVar(&cfg.RealNodes, "real-nodes", false,
		"up: run real kubelets over containerd, with kube-proxy and CoreDNS (images from make images); other commands find out themselves")
	pf.StringVar(&cfg.ImagesDir, "images", cfg.ImagesDir, "directory of the real nodes' image archives (hack/images.sh)")
	// A cluster started with real nodes says so in its state directory.
	root.PersistentPreRun = func(*cobra.Command, []string) { cfg = cfg.Resolved() }
	root.AddCommand(upCmd(&cfg), downCmd(&cfg), statusCmd(&cfg), kubeletCmd(), nodeCmd(), provisionerCmd(), forwardCmd(),
		runContainerCmd(), proxyCmd(&cfg), faultCmd(&cfg))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

// repoRoot is the repository the binary was built in (bin/ lives there).
func repoRoot() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	return filepath.Dir(filepath.Dir(exe))
}

func defaultConfig() cluster.Config {
	root := repoRoot()
	return cluster.Config{
		StateDir:  filepath.Join(root, ".state", "local"),
		BinDir:    filepath.Join(root, "bin"),
		NetNS:     "regent-local",
		HostPort:  6443,
		Nodes:     3,
		ImageMap:  filepath.Join(root, "hack", "local", "images.yaml"),
		ImagesDir: filepath.Join(root, "bin", "images"),
	}
}

func logger(name string) logr.Logger {
	stdr.SetVerbosity(0)
	return stdr.New(nil).WithName(name)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return kubernetes.NewForConfig(cfg)
}

func upCmd(cfg *cluster.Config) *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Start the cluster (or the parts of it that are not running) and wait until it is ready",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(cfg.StateDir)
			if err != nil {
				return err
			}
			cfg.StateDir = abs
			logf := func(f string, a ...any) { fmt.Fprintf(c.ErrOrStderr(), f+"\n", a...) }
			ctx, cancel := signalContext()
			defer cancel()
			if err := cluster.Up(ctx, *cfg, logf); err != nil {
				return err
			}
			cs, err := clientFor(cfg.AdminKubeconfig())
			if err != nil {
				return err
			}
			if err := provisioner.EnsureStorageClass(ctx, cs); err != nil {
				return fmt.Errorf("default StorageClass: %w", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "The local cluster is up.\n  export KUBECONFIG=%s\n", cfg.AdminKubeconfig())
			return nil
		},
	}
}

// nodeCmd is a real node (realnode): started by up in the node's
// namespaces, it runs containerd, the kubelet and kube-proxy.
func nodeCmd() *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:    "node",
		Short:  "Run a real node of the cluster (started by up --real-nodes)",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(c *cobra.Command, _ []string) error {
			b, err := os.ReadFile(config)
			if err != nil {
				return err
			}
			var n realnode.Node
			if err := json.Unmarshal(b, &n); err != nil {
				return fmt.Errorf("%s: %w", config, err)
			}
			ctx, cancel := signalContext()
			defer cancel()
			return realnode.Run(ctx, n, func(f string, a ...any) { fmt.Fprintf(c.ErrOrStderr(), f+"\n", a...) })
		},
	}
	c.Flags().StringVar(&config, "config", "", "the node's node.json, written by up")
	return c
}

func downCmd(cfg *cluster.Config) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the cluster (its data stays in the state directory)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return cluster.Down(*cfg, func(f string, a ...any) { fmt.Fprintf(c.ErrOrStderr(), f+"\n", a...) })
		},
	}
}

func statusCmd(cfg *cluster.Config) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show which processes of the cluster run",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := cluster.Status(*cfg)
			if err != nil {
				return err
			}
			down := 0
			for _, name := range cluster.ProcessNames(*cfg) {
				if pid := st[name]; pid > 0 {
					fmt.Fprintf(c.OutOrStdout(), "%-28s running (pid %d)\n", name, pid)
				} else {
					fmt.Fprintf(c.OutOrStdout(), "%-28s stopped\n", name)
					down++
				}
			}
			fmt.Fprintf(c.OutOrStdout(), "kubeconfig: %s\n", cfg.AdminKubeconfig())
			if down > 0 {
				return fmt.Errorf("%d processes are not running", down)
			}
			return nil
		},
	}
}

func kubeletCmd() *cobra.Command {
	var kcfg kubelet.Config
	var kubeconfig, imageMap, apiserver string
	c := &cobra.Command{
		Use:    "kubelet",
		Short:  "Run one node of the cluster (started by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cs, err := clientFor(kubeconfig)
			if err != nil {
				return err
			}
			if kcfg.Images, err = lcruntime.LoadImageMap(imageMap, repoRoot()); err != nil {
				return err
			}
			if kcfg.APIServerHost, kcfg.APIServerPort, err = net.SplitHostPort(apiserver); err != nil {
				return err
			}
			if kcfg.Launcher, err = os.Executable(); err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			return kubelet.New(kcfg, cs, logger("kubelet").WithValues("node", kcfg.Node)).Run(ctx)
		},
	}
	f := c.Flags()
	f.StringVar(&kcfg.Node, "node", "", "node name")
	f.StringVar(&kcfg.Zone, "zone", "zone-a", "topology zone")
	f.StringVar(&kcfg.Cluster, "netns", "regent-local", "cluster name")
	f.StringVar(&kcfg.StateDir, "state", "", "node state directory")
	f.StringVar(&kcfg.PodIPPrefix, "pod-ip-prefix", "10.244.1", "first three octets of pod addresses")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig")
	f.StringVar(&imageMap, "image-map", "", "image map")
	f.StringVar(&apiserver, "apiserver", cluster.APIServerIP+":6443", "API server address for pods")
	f.IntVar(&kcfg.Serving.Port, "port", cluster.KubeletPort, "port of the node's API (kubectl logs), on its InternalIP")
	f.StringVar(&kcfg.Serving.CertFile, "tls-cert-file", "", "the node's serving certificate")
	f.StringVar(&kcfg.Serving.KeyFile, "tls-private-key-file", "", "the node's serving key")
	f.StringVar(&kcfg.Serving.ClientCAFile, "client-ca-file", "", "CA of the clients' certificates (the API server's)")
	for _, required := range []string{"node", "state", "kubeconfig", "tls-cert-file", "tls-private-key-file", "client-ca-file"} {
		_ = c.MarkFlagRequired(required)
	}
	return c
}

func provisionerCmd() *cobra.Command {
	var kubeconfig, dir string
	c := &cobra.Command{
		Use: "provisioner", Short: "Provision directory volumes (started by up)", Hidden: true, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cs, err := clientFor(kubeconfig)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			return (&provisioner.Provisioner{Client: cs, Dir: dir, Log: logger("provisioner")}).Run(ctx)
		},
	}
	c.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig")
	c.Flags().StringVar(&dir, "dir", "", "directory of the volumes")
	return c
}

func forwardCmd() *cobra.Command {
	var ns, listen, to string
	c := &cobra.Command{
		Use: "forward", Short: "Forward a host port into the cluster (started by up)", Hidden: true, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			return netns.Forward(ctx, l, func(ctx context.Context) (net.Conn, error) {
				return netns.Dial(ctx, ns, "tcp", to)
			})
		},
	}
	c.Flags().StringVar(&ns, "netns", "", "network namespace")
	c.Flags().StringVar(&listen, "listen", "", "host address")
	c.Flags().StringVar(&to, "to", "", "address inside the namespace")
	return c
}

func runContainerCmd() *cobra.Command {
	return &cobra.Command{
		Use: "run-container SPEC", Short: "Start a container (used by the kubelet)", Hidden: true, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			// Mounts, chroot and credentials must all apply to the thread
			// that finally calls exec.
			runtime.LockOSThread()
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			spec, err := lcruntime.DecodeSpec(b)
			if err != nil {
				return err
			}
			return lcruntime.Launch(spec)
		},
	}
}

func proxyCmd(cfg *cluster.Config) *cobra.Command {
	var namespace, port, listen string
	c := &cobra.Command{
		Use:   "proxy SERVICE",
		Short: "Forward a port on 127.0.0.1 to a ready endpoint of a Service, following it as it moves",
		Example: "  localcluster proxy pg-leader --namespace default --listen 127.0.0.1:15432\n" +
			"  psql 'host=pg-leader.default.svc hostaddr=127.0.0.1 port=15432 dbname=app user=app sslmode=verify-full sslrootcert=pg-ca.crt'",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cs, err := clientFor(cfg.AdminKubeconfig())
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Forwarding %s to service %s/%s\n", l.Addr(), namespace, args[0])
			ctx, cancel := signalContext()
			defer cancel()
			p := &proxy.Proxy{Client: cs, Namespace: namespace, Service: args[0], Port: port, Log: logger("proxy"),
				Dial: func(ctx context.Context, addr string) (net.Conn, error) {
					return netns.Dial(ctx, cfg.NetNS, "tcp", addr)
				}}
			return p.Serve(ctx, l)
		},
	}
	c.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the Service")
	c.Flags().StringVar(&port, "port", "", "Service port name or number (default: the first)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on (127.0.0.0/8 only)")
	return c
}

func faultCmd(cfg *cluster.Config) *cobra.Command {
	c := &cobra.Command{Use: "fault", Short: "Break things on purpose: kill, freeze, thaw, pause, resume, partition, heal, heartbeat"}
	pod := func(ref string) (*corev1.Pod, error) {
		ns, name := "default", ref
		if i := strings.IndexByte(ref, '/'); i >= 0 {
			ns, name = ref[:i], ref[i+1:]
		}
		cs, err := clientFor(cfg.AdminKubeconfig())
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if pod.Spec.NodeName == "" {
			return nil, fmt.Errorf("pod %s/%s is not scheduled", ns, name)
		}
		return pod, nil
	}
	freeze := func(ref string, frozen bool) error {
		p, err := pod(ref)
		if err != nil {
			return err
		}
		return cfg.Freeze(p, "", frozen)
	}
	c.AddCommand(&cobra.Command{
		Use: "kill [NAMESPACE/]POD [CONTAINER]", Short: "Kill every process of a container (or of the whole pod)",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := pod(args[0])
			if err != nil {
				return err
			}
			container := ""
			if len(args) == 2 {
				container = args[1]
			}
			return cfg.Kill(p, container)
		},
	}, &cobra.Command{
		Use: "freeze [NAMESPACE/]POD", Short: "Freeze every process of a pod (cgroup freezer)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return freeze(args[0], true) },
	}, &cobra.Command{
		Use: "thaw [NAMESPACE/]POD", Short: "Thaw a frozen pod", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return freeze(args[0], false) },
	}, &cobra.Command{
		Use: "pause PROCESS", Short: "Stop a process of the cluster (SIGSTOP): kube-apiserver, etcd, kubelet-<node>…",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return cfg.Pause(args[0], true) },
	}, &cobra.Command{
		Use: "resume PROCESS", Short: "Let a paused process go on (SIGCONT)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return cfg.Pause(args[0], false) },
	}, partitionCmd(cfg), &cobra.Command{
		Use: "heal [NAME]", Short: "Remove a partition (all of them without a name)", Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return cfg.Heal(name)
		},
	}, &cobra.Command{
		Use: "partitions", Short: "List the partitions in force", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			names, err := cfg.Partitions()
			for _, n := range names {
				fmt.Println(n)
			}
			return err
		},
	}, &cobra.Command{
		Use: "heartbeat stop|resume NODE", Short: "Stop or resume a node's heartbeat (status and Lease)",
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			file := kubelet.HeartbeatPausedFile(filepath.Join(cfg.StateDir, "nodes", args[1]))
			switch args[0] {
			case "stop":
				return os.WriteFile(file, nil, 0o644)
			case "resume":
				err := os.Remove(file)
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			return fmt.Errorf("heartbeat %s: want stop or resume", args[0])
		},
	})
	return c
}

// partitionCmd cuts the traffic between two sets of endpoints.
func partitionCmd(cfg *cluster.Config) *cobra.Command {
	var side1, side2 []string
	c := &cobra.Command{
		Use:   "partition NAME --between A[,B…] --and C[,D…]",
		Short: "Cut every connection between two sets of pods ([NAMESPACE/]POD) or the API server (apiserver), both ways",
		Example: "  localcluster fault partition leader-api --between default/db-0 --and apiserver\n" +
			"  localcluster fault partition split --between db-0 --and db-1,db-2\n" +
			"  localcluster fault heal split",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(side1) == 0 || len(side2) == 0 {
				return fmt.Errorf("a partition needs both --between and --and")
			}
			cs, err := clientFor(cfg.AdminKubeconfig())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resolve := func(refs []string) ([]netfault.Endpoint, error) {
				var out []netfault.Endpoint
				for _, r := range refs {
					e, err := cfg.Endpoint(ctx, cs, r)
					if err != nil {
						return nil, err
					}
					out = append(out, e)
				}
				return out, nil
			}
			a, err := resolve(side1)
			if err != nil {
				return err
			}
			b, err := resolve(side2)
			if err != nil {
				return err
			}
			return cfg.Partition(args[0], a, b)
		},
	}
	c.Flags().StringSliceVar(&side1, "between", nil, "one side: pods ([NAMESPACE/]POD) or apiserver")
	c.Flags().StringSliceVar(&side2, "and", nil, "the other side")
	return c
}
