package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/agent"
	"github.com/regent-dev/regent/replica/instance"
)

// The agent's API client rate (newAgentCommand).
const (
	agentQPS   = 20
	agentBurst = 50
)

func newAgentCommand() *cobra.Command {
	cfg := agent.Config{RelayPort: names.PortRelay, HTTPPort: names.PortAgentHTTP}
	var kubeconfig, recovery string
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the sidecar of a database pod: leadership, fencing, replication relay, status",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var errs []error
			if net.ParseIP(cfg.PodIP) == nil {
				errs = append(errs, fmt.Errorf("--pod-ip %q is not an IP address (set POD_IP from status.podIP)", cfg.PodIP))
			}
			for flag, v := range map[string]string{"--pod-name": cfg.Pod, "--namespace": cfg.Namespace, "--cluster": cfg.Cluster} {
				if v == "" {
					errs = append(errs, fmt.Errorf("%s is empty", flag))
				}
			}
			if recovery != "" {
				cfg.Recovery = &instance.RestoreRequest{}
				if err := json.Unmarshal([]byte(recovery), cfg.Recovery); err != nil {
					errs = append(errs, fmt.Errorf("--recovery: %w", err))
				}
			}
			if err := errors.Join(errs...); err != nil {
				return ExitError{Code: 2, Err: err}
			}
			var rc *rest.Config
			var err error
			if kubeconfig != "" {
				rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
			} else {
				rc, err = rest.InClusterConfig()
			}
			if err != nil {
				return ExitError{Code: 2, Err: fmt.Errorf("find the API server: %w", err)}
			}
			rc.Timeout = 0
			// client-go's default (5/s, bursts of 10) throttled the agent
			// during a failover, when every event wakes a pass of two reads:
			// each read then waited 200 ms for a token. A pass at most every
			// 100 ms is the agent's own pace; the API server's priority and
			// fairness protects it from more.
			rc.QPS, rc.Burst = agentQPS, agentBurst
			if cfg.Client, err = kubernetes.NewForConfig(rc); err != nil {
				return err
			}
			cfg.Log = newLogger().WithName("agent").WithValues("pod", cfg.Pod)
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer cancel()
			return agent.New(cfg).Run(ctx)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace ($POD_NAMESPACE)")
	f.StringVar(&cfg.Cluster, "cluster", os.Getenv("REGENT_CLUSTER"), "ReplicaSet name ($REGENT_CLUSTER)")
	f.StringVar(&cfg.Pod, "pod-name", os.Getenv("POD_NAME"), "pod name ($POD_NAME)")
	f.StringVar(&cfg.PodIP, "pod-ip", os.Getenv("POD_IP"), "pod IP ($POD_IP)")
	f.StringVar(&cfg.RunDir, "run-dir", envOr("REGENT_RUN_DIR", names.SocketDir), "run directory ($REGENT_RUN_DIR)")
	f.StringVar(&cfg.SecretsDir, "secrets-dir", names.SecretsMountPath, "directory of the passwords")
	f.StringVar(&cfg.AppDatabase, "app-database", envOr(names.EnvAppDatabase, "app"), "application database ($"+names.EnvAppDatabase+")")
	f.StringVar(&cfg.AppOwner, "app-owner", envOr(names.EnvAppOwner, "app"), "application role ($"+names.EnvAppOwner+")")
	f.StringVar(&recovery, "recovery", os.Getenv(names.EnvRecovery),
		"restore the first leader from a backup: JSON {backupID, target: {time|lsn|name}} ($"+names.EnvRecovery+"); empty: initdb")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: the pod's service account)")
	f.IntVar(&cfg.RelayPort, "relay-port", names.PortRelay, "replication relay port")
	f.IntVar(&cfg.HTTPPort, "http-port", names.PortAgentHTTP, "HTTP API port")
	return c
}
