package cmd

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers"
	"github.com/regent-dev/regent/internal/version"
)

// managerOptions are the operator's flags.
type managerOptions struct {
	metricsAddr             string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	// The operator's own election: short next to a cluster's lease, since
	// no failover happens while no operator is active.
	leaseDuration, renewDeadline, retryPeriod time.Duration
	regentImage                               string
	postgresImage                             string
	pullPolicy                                string
	// watchNamespaces limits the operator to these namespaces (none: all).
	watchNamespaces []string
	// networkPolicies gives every cluster a NetworkPolicy that lets the
	// operator's pods (operatorNamespace, operatorPodLabels) read agents.
	networkPolicies   bool
	operatorNamespace string
	operatorPodLabels map[string]string
	zap               zap.Options
}

func (o *managerOptions) validate() error {
	var errs []error
	if o.regentImage == "" {
		errs = append(errs, errors.New("--regent-image must not be empty"))
	}
	if o.postgresImage == "" {
		errs = append(errs, errors.New("--postgres-image must not be empty"))
	}
	for _, ns := range o.watchNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", ns, strings.Join(msgs, "; ")))
		}
	}
	if o.networkPolicies && (o.operatorNamespace == "" || len(o.operatorPodLabels) == 0) {
		errs = append(errs, errors.New("--network-policies needs --operator-namespace (or $POD_NAMESPACE) and --operator-pod-labels: "+
			"the policies let the operator's pods, and only them besides the members, reach the agents"))
	}
	// client-go's leader election refuses these too, but only once running.
	if o.retryPeriod <= 0 || o.renewDeadline <= o.retryPeriod || o.leaseDuration <= o.renewDeadline {
		errs = append(errs, fmt.Errorf("leader election: want 0 < --leader-election-retry-period (%s) < --leader-election-renew-deadline (%s) "+
			"< --leader-election-lease-duration (%s)", o.retryPeriod, o.renewDeadline, o.leaseDuration))
	}
	switch corev1.PullPolicy(o.pullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("--image-pull-policy %q: want Always, IfNotPresent or Never", o.pullPolicy))
	}
	return errors.Join(errs...)
}

func newManagerCommand() *cobra.Command {
	o := &managerOptions{}
	c := &cobra.Command{
		Use:   "manager",
		Short: "Run the operator",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return ExitError{Code: 2, Err: err}
			}
			return runManager(o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080",
		"Address of the Prometheus metrics endpoint; 0 disables it. In a pod, bind $(POD_IP):PORT.")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081",
		"Address of the /healthz and /readyz endpoints.")
	f.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect one active operator among replicas through a Lease (required with more than one replica).")
	f.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the operator's own Lease; default: the namespace the operator runs in.")
	f.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 4*time.Second,
		"How long a standby operator waits after the active one's last renewal before it takes over (a crash; a clean stop hands over at once).")
	f.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 3*time.Second,
		"How long the active operator tries to renew before it stops acting; below the lease duration.")
	f.DurationVar(&o.retryPeriod, "leader-election-retry-period", 500*time.Millisecond,
		"How often the operators try to acquire or renew.")
	f.StringVar(&o.regentImage, "regent-image", version.DefaultRegentImage(),
		"Image with the regent binary, for the pods' init container and agent sidecar.")
	f.StringVar(&o.postgresImage, "postgres-image", "postgres:15",
		"PostgreSQL image for clusters whose spec.postgres.image is empty.")
	f.StringVar(&o.pullPolicy, "image-pull-policy", "",
		"Pull policy of the pods' images: Always, IfNotPresent or Never (default: Kubernetes' own).")
	f.StringSliceVar(&o.watchNamespaces, "watch-namespaces", nil,
		"Comma-separated namespaces whose ReplicaSets the operator manages, with RBAC in those alone; default: every namespace.")
	f.BoolVar(&o.networkPolicies, "network-policies", false,
		"Give every cluster a NetworkPolicy: its relay and agent ports open to its own pods and the operator only, "+
			"PostgreSQL to spec.networkPolicy.postgresFrom.")
	f.StringVar(&o.operatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the operator's pods, for --network-policies (default $POD_NAMESPACE).")
	f.StringToStringVar(&o.operatorPodLabels, "operator-pod-labels", nil,
		"Labels of the operator's pods (k=v,k=v), for --network-policies.")
	fs := flag.NewFlagSet("zap", flag.ContinueOnError)
	o.zap.BindFlags(fs)
	f.AddGoFlagSet(fs)
	return c
}

func runManager(o *managerOptions) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(regentv1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("find the API server: %w", err)
	}
	cacheOptions := controllers.CacheOptions()
	if len(o.watchNamespaces) > 0 {
		// Every watch and list then stays in these namespaces, so
		// namespaced Roles there are all the operator needs.
		cacheOptions.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.watchNamespaces {
			cacheOptions.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOptions,
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "regent-operator.regent.dev",
		LeaderElectionNamespace: o.leaderElectionNamespace,
		LeaseDuration:           &o.leaseDuration,
		RenewDeadline:           &o.renewDeadline,
		RetryPeriod:             &o.retryPeriod,
		// A new leader starts at once when this one stops cleanly.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	r := &controllers.ReplicaSetReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("regent-operator"),
		Images: controllers.Images{
			Regent:     o.regentImage,
			Postgres:   o.postgresImage,
			PullPolicy: corev1.PullPolicy(o.pullPolicy),
		},
	}
	if o.networkPolicies {
		r.NetworkPolicies = &controllers.NetworkPolicies{OperatorNamespace: o.operatorNamespace, OperatorLabels: o.operatorPodLabels}
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the ReplicaSet controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting the operator", "version", version.Version, "regentImage", o.regentImage,
		"postgresImage", o.postgresImage, "leaderElect", o.leaderElect, "watchNamespaces", o.watchNamespaces, "pid", os.Getpid())
	return mgr.Start(ctrl.SetupSignalHandler())
}
