// Package namespaced_test runs the operator as the chart's namespaced
// install does: the real binary with --watch-namespaces, as a
// ServiceAccount whose only rights are the generated rules, granted by a
// Role in the watched namespace, against a real API server.
package namespaced_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/testenv"
	"github.com/regent-dev/regent/internal/waitfor"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// The operator, watching team-a only with a Role there and nothing
// cluster-wide, builds team-a's cluster and leaves team-b's alone.
func TestOperatorWatchesOnlyItsNamespaces(t *testing.T) {
	if _, err := testenv.Assets(); err != nil {
		t.Skipf("no control plane binaries: %v (make test builds them)", err)
	}
	env, err := testenv.Start(testenv.CRDDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := t.Context()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	for _, ns := range []string{"regent-system", "team-a", "team-b"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The chart's namespaced RBAC: the generated rules, as a Role in team-a.
	b, err := os.ReadFile(filepath.Join(repoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "regent-system", Name: "regent"}}
	if _, err := cs.CoreV1().ServiceAccounts("regent-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "regent"}, Rules: rules.Rules}
	if _, err := cs.RbacV1().Roles("team-a").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "regent"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "regent"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "regent-system", Name: "regent"}}}
	if _, err := cs.RbacV1().RoleBindings("team-a").Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := cs.CoreV1().ServiceAccounts("regent-system").CreateToken(ctx, "regent",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["t"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["t"] = &clientcmdapi.AuthInfo{Token: token.Status.Token}
	kc.Contexts["t"] = &clientcmdapi.Context{Cluster: "t", AuthInfo: "t"}
	kc.CurrentContext = "t"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(dir, "regent")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build regent: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "operator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	opLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	opctx, stop := context.WithCancel(context.Background())
	op := exec.CommandContext(opctx, bin, "manager", "--watch-namespaces=team-a",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--regent-image=regent:test")
	op.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	op.Stdout, op.Stderr = logFile, logFile
	if err := op.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		_ = op.Wait()
		_ = logFile.Close()
		if t.Failed() {
			t.Logf("== operator log\n%s", opLog())
		}
	})

	admin, err := client.New(env.Config, client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}}
		if err := admin.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.Condition(t, 60*time.Second, "team-a's cluster reconciled", func() error {
		rs := &regentv1.ReplicaSet{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "db"}, rs); err != nil {
			return err
		}
		if rs.Status.ObservedGeneration != rs.Generation {
			return fmt.Errorf("observed generation %d of %d", rs.Status.ObservedGeneration, rs.Generation)
		}
		for _, name := range []string{"db-ca", "db-0-tls", "db-app"} {
			if _, err := cs.CoreV1().Secrets("team-a").Get(ctx, name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		_, err := cs.AppsV1().StatefulSets("team-a").Get(ctx, "db", metav1.GetOptions{})
		return err
	})
	// By now team-b would have had its turn: nothing was made there.
	rs := &regentv1.ReplicaSet{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: "db"}, rs); err != nil {
		t.Fatal(err)
	}
	if rs.Status.ObservedGeneration != 0 || len(rs.Status.Conditions) != 0 {
		t.Errorf("the operator touched team-b's ReplicaSet: %+v", rs.Status)
	}
	if _, err := cs.AppsV1().StatefulSets("team-b").Get(ctx, "db", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("team-b has a StatefulSet: %v", err)
	}
	var sts appsv1.StatefulSetList
	if err := admin.List(ctx, &sts, client.InNamespace("team-b")); err != nil || len(sts.Items) != 0 {
		t.Errorf("team-b's StatefulSets: %d, %v", len(sts.Items), err)
	}
	if strings.Contains(opLog(), "forbidden") {
		t.Errorf("the operator was refused something with its namespaced rights")
	}
}

func scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(regentv1.AddToScheme(s))
	return s
}
