package plugin_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/plugin"
	"github.com/regent-dev/regent/internal/testenv"
)

// writeKubeconfig writes a kubeconfig for cfg to a file of the test's.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin", Namespace: "default"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// apiServer starts a kube-apiserver with Regent's CRDs (skipping the test
// without envtest's binaries) and makes namespace there; it returns a
// client and a kubeconfig file for the plugin.
func apiServer(t *testing.T, namespace string) (client.Client, string) {
	t.Helper()
	if _, err := testenv.Assets(); err != nil {
		t.Skip(err)
	}
	env, err := testenv.Start(testenv.CRDDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = regentv1.AddToScheme(scheme)
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	return c, writeKubeconfig(t, env.Config)
}

// run runs `kubectl regent args…` and returns its output and error.
func run(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	root := plugin.NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestStatusAndSwitchoverAgainstTheAPIServer(t *testing.T) {
	c, kubeconfig := apiServer(t, "shop")
	ctx := t.Context()
	const ns = "shop"
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: regentv1.ReplicaSetSpec{Replicas: ptr.To(int32(3)), Replication: regentv1.ReplicationSpec{Mode: regentv1.ReplicationSync}}}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	// The status an operator writes: db-0 leads, db-1 can take over, db-2
	// cannot.
	ended := metav1.NewTime(time.Now().Add(-90 * time.Second))
	rs.Status = regentv1.ReplicaSetStatus{Phase: regentv1.PhaseHealthy, Leader: "db-0", Epoch: 4, Ready: "3/3",
		LastFailover: &regentv1.FailoverRecord{Kind: regentv1.FailoverKindFailover, From: "db-2", To: "db-0", Epoch: 4,
			Reason: "db-2's PostgreSQL stopped", StartTime: ptr.To(metav1.NewTime(ended.Add(-2 * time.Second))), EndTime: &ended,
			OldLeaderLSN: "0/3000100", NewLeaderLSN: "0/3000100", EstimatedLostBytes: ptr.To(int64(0))},
		Archive: &regentv1.ArchiveStatus{LastArchivedWAL: "000000040000000000000003", LastArchivedTime: &ended, PendingWAL: 1,
			Backups: 2, LastBackup: "db-20261207-1200", LastBackupTime: &ended},
		Members: []regentv1.MemberStatus{
			{Name: "db-0", Role: regentv1.RoleLeader, Ready: true, Timeline: ptr.To(int64(4)), ReceivedLSN: "0/3000200"},
			{Name: "db-1", Role: regentv1.RoleFollower, Ready: true, Timeline: ptr.To(int64(4)), ReceivedLSN: "0/3000200",
				LagBytes: ptr.To(int64(0)), Eligible: ptr.To(true), DiskUsedBytes: ptr.To(int64(256 << 20)), DiskCapacityBytes: ptr.To(int64(1 << 30))},
			{Name: "db-2", Role: regentv1.RoleFollower, Ready: false, LagBytes: ptr.To(int64(3 << 20)), Eligible: ptr.To(false),
				Reason: "db-2 is not streaming from the leader"},
		}}
	if err := c.Status().Update(ctx, rs); err != nil {
		t.Fatal(err)
	}

	t.Run("status", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "status", "db")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Log("\n" + out)
		for _, want := range []string{"shop/db", "Healthy, Sync replication, 3/3 ready", "db-0", "epoch 4",
			"Failover db-2 → db-0 at epoch 4", "took about 2s", "0 bytes estimated lost",
			"db-2 is not streaming from the leader", "3.0 MiB", "25% of 1.0 GiB",
			"last WAL 000000040000000000000003 1m3", ", 1 pending", "2 kept, last db-20261207-1200 1m3"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q", want)
			}
		}
	})

	t.Run("clear errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"-n", ns, "status", "nope"}, `no Regent cluster "nope" in namespace shop (kubectl get dbrs -n shop lists them)`},
			{[]string{"status", "db"}, `no Regent cluster "db" in namespace default`}, // the context's namespace
			{[]string{"-n", ns, "switchover", "db", "db-7"}, "db-7 is not a member of shop/db (members: db-0, db-1, db-2)"},
			{[]string{"-n", ns, "switchover", "db", "db-0"}, "db-0 already leads shop/db (epoch 4)"},
			{[]string{"-n", ns, "switchover", "db", "db-2"}, "db-2 cannot lead shop/db now: db-2 is not streaming from the leader"},
			{[]string{"-n", ns, "status"}, "accepts 1 arg(s), received 0"},
		} {
			out, err := run(ctx, kubeconfig, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("kubectl regent %s: %v (%s), want an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
			}
		}
		got := &regentv1.ReplicaSet{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(rs), got); err != nil {
			t.Fatal(err)
		}
		if v, ok := got.Annotations[names.AnnotationSwitchoverTo]; ok {
			t.Errorf("a refused switchover left the annotation %s=%s", names.AnnotationSwitchoverTo, v)
		}
	})

	t.Run("switchover waits for the target to lead", func(t *testing.T) {
		// The operator's part, played here: once asked, db-1 leads at epoch 5.
		done := make(chan error, 1)
		go func() {
			done <- func() error {
				for range 100 {
					got := &regentv1.ReplicaSet{}
					if err := c.Get(ctx, client.ObjectKeyFromObject(rs), got); err != nil {
						return err
					}
					if got.Annotations[names.AnnotationSwitchoverTo] == "db-1" {
						got.Status.Leader, got.Status.Epoch = "db-1", 5
						got.Status.Members[0].Role, got.Status.Members[0].Eligible = regentv1.RoleFollower, ptr.To(true)
						got.Status.Members[1].Role, got.Status.Members[1].Eligible = regentv1.RoleLeader, nil
						return c.Status().Update(ctx, got)
					}
					time.Sleep(100 * time.Millisecond)
				}
				return fmt.Errorf("the switchover was never asked for")
			}()
		}()
		out, err := run(ctx, kubeconfig, "-n", ns, "switchover", "db", "db-1", "--timeout", "20s")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "db-1 leads shop/db at epoch 5") {
			t.Errorf("switchover said %q", out)
		}
	})

	t.Run("a switchover nobody carries out times out with the leader it sees", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "switchover", "db", "db-0", "--timeout", "1s")
		if err == nil || !strings.Contains(err.Error(), `db-0 does not lead shop/db after 1s: the leader is "db-1" at epoch 5`) {
			t.Errorf("switchover to a target nobody promotes: %v (%s)", err, out)
		}
	})
}

// Against a cluster without Regent's CRD, the plugin says the operator is
// missing rather than printing an API error.
func TestAClusterWithoutRegentIsNamedAsSuch(t *testing.T) {
	if _, err := testenv.Assets(); err != nil {
		t.Skip(err)
	}
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig := writeKubeconfig(t, env.Config)
	for _, args := range [][]string{{"status", "db"}, {"switchover", "db", "db-1"}, {"promote", "db", "db-1", "--accept-data-loss"},
		{"psql", "db"}, {"logs", "db"}, {"backup", "db"}} {
		out, err := run(t.Context(), kubeconfig, args...)
		if err == nil || !strings.Contains(err.Error(), "no ReplicaSets of group regent.dev: is Regent's operator installed") {
			t.Errorf("%s on a cluster without Regent: %v (%s)", args[0], err, out)
		}
	}
}
