// Package plugin is `kubectl regent`, the plugin people operate Regent's
// clusters with: status (members, roles, lag, eligibility, the last
// failover, certificates, the archive), switchover, a forced promotion,
// psql, the members' logs and a backup now, with errors that say what to
// do about a wrong name, a target that cannot lead, or a cluster that is
// not Regent's.
package plugin

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// options are the flags every command shares, kubectl's own.
type options struct {
	kubeconfig, context, namespace string
	out                            io.Writer
}

// NewRoot returns `kubectl regent` and its commands.
func NewRoot() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:           "kubectl-regent",
		Short:         "Operate Regent's database clusters (ReplicaSets of group regent.dev)",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(c *cobra.Command, _ []string) {
			o.out = c.OutOrStdout()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
	pf.StringVar(&o.context, "context", "", "the kubeconfig context to use")
	pf.StringVarP(&o.namespace, "namespace", "n", "", "the cluster's namespace (default: the context's)")
	root.AddCommand(statusCmd(o), switchoverCmd(o), promoteCmd(o), psqlCmd(o), logsCmd(o), backupCmd(o))
	return root
}

// config reads the kubeconfig as kubectl would, and returns the namespace
// to use.
func (o *options) config() (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	ns := o.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("kubeconfig: %w", err)
		}
	}
	return cfg, ns, nil
}

// client connects as kubectl would, and returns the namespace to use.
func (o *options) client() (client.Client, string, error) {
	cfg, ns, err := o.config()
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	if err := regentv1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connect to the cluster: %w", err)
	}
	return c, ns, nil
}

// get reads the ReplicaSet name of namespace, with an error that says what
// to do when there is none.
func (o *options) get(cmd *cobra.Command, name string) (client.Client, *regentv1.ReplicaSet, error) {
	c, ns, err := o.client()
	if err != nil {
		return nil, nil, err
	}
	rs := &regentv1.ReplicaSet{}
	err = c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: name}, rs)
	switch {
	case err == nil:
		return c, rs, nil
	case noRegent(err):
		return nil, nil, fmt.Errorf("this cluster has no ReplicaSets of group regent.dev: is Regent's operator installed (helm install regent charts/regent)?")
	case apierrors.IsNotFound(err):
		return nil, nil, fmt.Errorf("no Regent cluster %q in namespace %s (kubectl get dbrs -n %s lists them)", name, ns, ns)
	}
	return nil, nil, fmt.Errorf("read ReplicaSet %s/%s: %w", ns, name, err)
}

// noRegent says whether err is the API server not knowing Regent's kinds.
func noRegent(err error) bool {
	var noKind *meta.NoKindMatchError
	return errors.As(err, &noKind) || meta.IsNoMatchError(err)
}
