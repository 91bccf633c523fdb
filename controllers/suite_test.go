package controllers

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/testenv"
)

// The envtest suite: one real etcd, kube-apiserver and
// kube-controller-manager for the package, the operator's manager running
// against them, and a fresh namespace per test.
var (
	env       *testenv.Env
	k8s       client.Client
	scheme    = runtime.NewScheme()
	testImage = Images{Regent: "regent:test", Postgres: "postgres:15"}
)

func TestMain(m *testing.M) {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(regentv1.AddToScheme(scheme))
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// Unit tests only; the envtest tests skip themselves.
		return m.Run()
	}
	// The operator's logs stay quiet unless REGENT_TEST_VERBOSE is set.
	level := zapcore.ErrorLevel
	if os.Getenv("REGENT_TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(level)))
	var err error
	env, err = testenv.Start(testenv.CRDDir())
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the control plane:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the control plane:", err)
		}
	}()
	if k8s, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// The operator's requests are counted by namespace and verb.
	mgrConfig := rest.CopyConfig(env.Config)
	mgrConfig.Wrap(operatorRequests.wrap)
	mgr, err := ctrl.NewManager(mgrConfig, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "create manager:", err)
		return 1
	}
	operator = newTestReconciler(mgr)
	if err := operator.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "set up reconciler:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "kube-controller-manager log (tail):\n%s\n", env.ControllerManagerLogTail(30))
	}
	return code
}

// operator is the reconciler the suite's manager runs.
var operator *ReplicaSetReconciler

func newTestReconciler(mgr ctrl.Manager) *ReplicaSetReconciler {
	return &ReplicaSetReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("regent-operator"),
		Images:    testImage,
		// Pods in envtest run nothing: hollow agents answer for them.
		Agents: hollow,
		// As the chart's networkPolicy.enabled runs it.
		NetworkPolicies: testNetworkPolicies,
	}
}

// envtestOnly skips a test in -short mode, which runs no control plane.
func envtestOnly(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the envtest control plane; run without -short")
	}
}

// newNamespace creates a namespace for one test and deletes it afterwards.
func newNamespace(t *testing.T) string {
	t.Helper()
	envtestOnly(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "regent-test-"}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = k8s.Delete(ctx, ns)
	})
	return ns.Name
}

// discardRecorder drops events, for reconcilers run by hand in tests.
type discardRecorder struct{}

func (discardRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {
}
