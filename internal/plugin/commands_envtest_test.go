package plugin_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/plugin"
	"github.com/regent-dev/regent/internal/testenv"
)

// runErr is run with stdout and stderr apart.
func runErr(ctx context.Context, kubeconfig string, args ...string) (string, string, error) {
	root := plugin.NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// playOperator runs act once get finds what it waits for, as the
// operator's part of a test; the returned channel says how it went.
func playOperator[T client.Object](ctx context.Context, c client.Client, key client.ObjectKey, obj T, ready func(T) bool, act func(T) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			for range 200 {
				if err := c.Get(ctx, key, obj); err == nil && ready(obj) {
					return act(obj)
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fmt.Errorf("%s was never asked for", key)
		}()
	}()
	return done
}

func TestPromoteBackupPsqlAndLogsAgainstTheAPIServer(t *testing.T) {
	c, kubeconfig := apiServer(t, "ops")
	ctx := t.Context()
	const ns = "ops"
	// db: three members, db-0 leads epoch 4; db-2 has no pod (a lost node's
	// pod, deleted). No object store.
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: regentv1.ReplicaSetSpec{Replicas: ptr.To(int32(3)), Replication: regentv1.ReplicationSpec{Mode: regentv1.ReplicationSync}}}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	rs.Status = regentv1.ReplicaSetStatus{Phase: regentv1.PhaseDegraded, Leader: "db-0", Epoch: 4, Ready: "1/3",
		Members: []regentv1.MemberStatus{
			{Name: "db-0", Role: regentv1.RoleLeader},
			{Name: "db-1", Role: regentv1.RoleFollower, Eligible: ptr.To(false), Reason: "the election waits for db-2"},
			{Name: "db-2", Role: regentv1.RoleFollower},
		}}
	if err := c.Status().Update(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for i, role := range []string{names.RoleLeader, names.RoleFollower} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names.Pod("db", i), Labels: names.Labels("db")},
			Spec: corev1.PodSpec{NodeName: testenv.NodeName, Containers: []corev1.Container{{Name: names.ContainerPostgres, Image: "postgres:15"},
				{Name: names.ContainerAgent, Image: "regent:test"}}}}
		pod.Labels[names.LabelRole] = role
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	// archived: a cluster with an object store.
	archived := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "archived"},
		Spec: regentv1.ReplicaSetSpec{Backup: regentv1.BackupConfiguration{ObjectStore: &regentv1.ObjectStoreSpec{
			Endpoint: "http://minio.storage:9000", Bucket: "backups", Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}}}}
	if err := c.Create(ctx, archived); err != nil {
		t.Fatal(err)
	}
	annotations := func(t *testing.T) map[string]string {
		t.Helper()
		got := &regentv1.ReplicaSet{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(rs), got); err != nil {
			t.Fatal(err)
		}
		return got.Annotations
	}
	clearRequest := func(t *testing.T) {
		t.Helper()
		patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null,%q:null}}}`,
			names.AnnotationPromote, names.AnnotationAcceptDataLoss))
		if err := c.Patch(ctx, &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}}, patch); err != nil {
			t.Fatal(err)
		}
	}
	// refusal is a PromoteRefused event on db as the operator's recorder
	// writes it (events.k8s.io/v1).
	refusal := func(name, note string) *eventsv1.Event {
		cur := &regentv1.ReplicaSet{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(rs), cur); err != nil {
			t.Fatal(err)
		}
		return &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			EventTime: metav1.NowMicro(), ReportingController: "regent-operator", ReportingInstance: "regent-operator-0",
			Action: "Promote", Reason: regentv1.EventPromoteRefused, Type: corev1.EventTypeWarning, Note: note,
			Regarding: corev1.ObjectReference{APIVersion: regentv1.GroupVersion.String(), Kind: "ReplicaSet",
				Namespace: ns, Name: "db", UID: cur.UID}}
	}

	t.Run("clear errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"promote", "nope", "db-1", "--accept-data-loss"}, `no Regent cluster "nope" in namespace ops (kubectl get dbrs -n ops lists them)`},
			{[]string{"psql", "nope"}, `no Regent cluster "nope" in namespace ops`},
			{[]string{"logs", "nope"}, `no Regent cluster "nope" in namespace ops`},
			{[]string{"backup", "nope"}, `no Regent cluster "nope" in namespace ops`},
			// promote
			{[]string{"promote", "db", "db-1"}, "a forced promotion makes db-1 lead ops/db whatever the election says: " +
				"the commits db-1 lacks are lost, even acknowledged ones, even in Sync mode. Add --accept-data-loss"},
			{[]string{"promote", "db", "db-1"}, "kubectl regent switchover db db-1 loses nothing"},
			{[]string{"promote", "db", "db-3", "--accept-data-loss"}, "db-3 is not a member of ops/db (members: db-0, db-1, db-2)"},
			{[]string{"promote", "db", "archived-0", "--accept-data-loss"}, "archived-0 is not a member of ops/db"},
			{[]string{"promote", "db", "db-0", "--accept-data-loss"}, "db-0 already leads ops/db (epoch 4)"},
			{[]string{"promote", "db", "db-2", "--accept-data-loss"}, "db-2 of ops/db has no pod: only a member running as a follower can be promoted"},
			{[]string{"promote", "db"}, "accepts 2 arg(s), received 1"},
			// psql and logs, on the pods the API server has
			{[]string{"psql", "db", "--pod", "db-2"}, "db-2 is not a pod of ops/db (pods: db-0, db-1)"},
			{[]string{"psql", "db", "--follower"}, "ops/db has no ready follower"},
			{[]string{"psql", "archived"}, "ops/archived has no pods"},
			{[]string{"logs", "db", "--pod", "db-2"}, "db-2 is not a pod of ops/db (pods: db-0, db-1)"},
			{[]string{"logs", "db", "--container", "bootstrap"}, `--container "bootstrap": the members' containers are postgres and agent`},
			// backup
			{[]string{"backup", "db"}, "ops/db has no spec.backup.objectStore, so nowhere to put a backup"},
		} {
			out, err := run(ctx, kubeconfig, append([]string{"-n", ns}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("kubectl regent %s: %v (%s), want an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
			}
		}
		if a := annotations(t); a[names.AnnotationPromote] != "" || a[names.AnnotationAcceptDataLoss] != "" {
			t.Errorf("a refused promotion left annotations %v", a)
		}
		var backups regentv1.BackupList
		if err := c.List(ctx, &backups, client.InNamespace(ns)); err != nil || len(backups.Items) != 0 {
			t.Errorf("a refused backup left Backups %v (%v)", backups.Items, err)
		}
	})

	t.Run("promote --wait=false sets both annotations", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "promote", "db", "db-1", "--accept-data-loss", "--wait=false")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		a := annotations(t)
		if a[names.AnnotationPromote] != "db-1" || a[names.AnnotationAcceptDataLoss] != "true" {
			t.Errorf("annotations %v, want %s=db-1 and %s=true", a, names.AnnotationPromote, names.AnnotationAcceptDataLoss)
		}
		if !strings.Contains(out, "asked the operator to promote db-1 in ops/db, accepting data loss "+
			"(kubectl annotate dbrs/db -n ops regent.dev/promote- regent.dev/accept-data-loss- withdraws it)") {
			t.Errorf("promote said %q", out)
		}
		clearRequest(t)
	})

	t.Run("promote waits for the operator to promote", func(t *testing.T) {
		// The operator's part, as it does it: the receipt, the request
		// cleared, then the leader in the pass's status.
		done := playOperator(ctx, c, client.ObjectKeyFromObject(rs), &regentv1.ReplicaSet{},
			func(got *regentv1.ReplicaSet) bool {
				return got.Annotations[names.AnnotationPromote] == "db-1" && got.Annotations[names.AnnotationAcceptDataLoss] == "true"
			},
			func(got *regentv1.ReplicaSet) error {
				got.Status.LastFailover = &regentv1.FailoverRecord{Kind: regentv1.FailoverKindForced, From: "db-0", To: "db-1", Epoch: 5,
					OldLeaderLSN: "0/3000100", NewLeaderLSN: "0/3000000", EstimatedLostBytes: ptr.To(int64(256))}
				if err := c.Status().Update(ctx, got); err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond)
				delete(got.Annotations, names.AnnotationPromote)
				delete(got.Annotations, names.AnnotationAcceptDataLoss)
				if err := c.Update(ctx, got); err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond)
				got.Status.Leader, got.Status.Epoch = "db-1", 5
				return c.Status().Update(ctx, got)
			})
		out, err := run(ctx, kubeconfig, "-n", ns, "promote", "db", "db-1", "--accept-data-loss", "--timeout", "20s")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"db-1 leads ops/db at epoch 5, forced, ",
			"RPO receipt: 256 bytes estimated lost (old leader at 0/3000100, db-1 at 0/3000000)"} {
			if !strings.Contains(out, want) {
				t.Errorf("promote said %q, want %q in it", out, want)
			}
		}
	})

	t.Run("promote says the operator's refusal, and withdraws the request", func(t *testing.T) {
		// An older refusal, of an earlier request: not this one's answer.
		if err := c.Create(ctx, refusal("db.old", "regent.dev/promote=db-0 is ignored: an older refusal")); err != nil {
			t.Fatal(err)
		}
		const note = "regent.dev/promote=db-0 is ignored: the leader db-1 is not lost (use regent.dev/switchover-to for a planned handover)"
		done := playOperator(ctx, c, client.ObjectKeyFromObject(rs), &regentv1.ReplicaSet{},
			func(got *regentv1.ReplicaSet) bool { return got.Annotations[names.AnnotationPromote] == "db-0" },
			func(*regentv1.ReplicaSet) error { return c.Create(ctx, refusal("db.new", note)) })
		start := time.Now()
		out, err := run(ctx, kubeconfig, "-n", ns, "promote", "db", "db-0", "--accept-data-loss", "--timeout", "20s")
		if err == nil || !strings.Contains(err.Error(), "the operator refused to promote db-0: "+note+" (the request was withdrawn)") {
			t.Errorf("a refused promotion: %v (%s)", err, out)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 15*time.Second {
			t.Errorf("the refusal took %s to be seen", time.Since(start))
		}
		if a := annotations(t); a[names.AnnotationPromote] != "" || a[names.AnnotationAcceptDataLoss] != "" {
			t.Errorf("a refused promotion left annotations %v", a)
		}
	})

	t.Run("a promotion nobody carries out times out, and says what it knows", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "promote", "db", "db-0", "--accept-data-loss", "--timeout", "1s")
		for _, want := range []string{`db-0 does not lead ops/db after 1s: the leader is "db-1" at epoch 5`,
			"the last PromoteRefused event, ", "the leader db-1 is not lost",
			"the request stands, and the operator acts on it once it can (kubectl annotate dbrs/db -n ops regent.dev/promote- regent.dev/accept-data-loss- withdraws it)"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("promote nobody carries out: %v (%s), want %q in the error", err, out, want)
			}
		}
		if a := annotations(t); a[names.AnnotationPromote] != "db-0" {
			t.Errorf("a pending request was withdrawn: %v", a)
		}
		clearRequest(t)
	})

	t.Run("logs says which containers it could not read", func(t *testing.T) {
		// No kubelet here: the API server cannot serve any log.
		_, stderr, err := runErr(ctx, kubeconfig, "-n", ns, "logs", "db", "--pod", "db-0")
		if err == nil || !strings.Contains(err.Error(), "could not read the logs of db-0/postgres, db-0/agent") {
			t.Errorf("logs without a kubelet: %v", err)
		}
		if !strings.Contains(stderr, "db-0/postgres: ") || !strings.Contains(stderr, "db-0/agent: ") {
			t.Errorf("logs said on stderr %q", stderr)
		}
	})

	t.Run("backup creates a Backup named after the cluster and the time", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "backup", "archived")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var list regentv1.BackupList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 {
			t.Fatalf("%d Backups, want 1", len(list.Items))
		}
		b := list.Items[0]
		if !regexp.MustCompile(`^archived-[0-9]{8}t[0-9]{6}z$`).MatchString(b.Name) || b.Spec.Cluster != "archived" ||
			b.Labels[names.LabelCluster] != "archived" {
			t.Errorf("Backup %s of %q, labels %v", b.Name, b.Spec.Cluster, b.Labels)
		}
		if !strings.Contains(out, "Backup ops/"+b.Name+" of archived created (kubectl get dbbackup "+b.Name+" -n ops -w follows it)") {
			t.Errorf("backup said %q", out)
		}
	})

	t.Run("backup --wait returns once it completed", func(t *testing.T) {
		key := client.ObjectKey{Namespace: ns, Name: "nightly"}
		done := playOperator(ctx, c, key, &regentv1.Backup{}, func(*regentv1.Backup) bool { return true },
			func(b *regentv1.Backup) error {
				started := metav1.NewTime(time.Now().Truncate(time.Second))
				b.Status = regentv1.BackupObjectStatus{Phase: regentv1.BackupRunning, ID: "20261207T120000Z", Member: "archived-1",
					FromStandby: true, StartedAt: &started}
				if err := c.Status().Update(ctx, b); err != nil {
					return err
				}
				time.Sleep(time.Second)
				b.Status.Phase, b.Status.CompletedAt = regentv1.BackupCompleted, ptr.To(metav1.NewTime(started.Add(12*time.Second)))
				b.Status.Timeline, b.Status.StartLSN, b.Status.EndLSN = 4, "0/5000028", "0/5000138"
				b.Status.Bytes, b.Status.StoredBytes = 22<<20, 3<<20
				return c.Status().Update(ctx, b)
			})
		out, err := run(ctx, kubeconfig, "-n", ns, "backup", "archived", "--name", "nightly", "--wait", "--timeout", "20s")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		t.Log("\n" + out)
		for _, want := range []string{"Backup ops/nightly of archived created, waiting for it", "running on archived-1 (a follower)",
			"Backup ops/nightly completed: ID 20261207T120000Z, taken on archived-1 (a follower) in 12s",
			"WAL: timeline 4, 0/5000028 to 0/5000138", "size: 22.0 MiB read, 3.0 MiB stored"} {
			if !strings.Contains(out, want) {
				t.Errorf("backup --wait lacks %q", want)
			}
		}
	})

	t.Run("backup --wait says why it failed", func(t *testing.T) {
		done := playOperator(ctx, c, client.ObjectKey{Namespace: ns, Name: "broken"}, &regentv1.Backup{},
			func(*regentv1.Backup) bool { return true },
			func(b *regentv1.Backup) error {
				b.Status = regentv1.BackupObjectStatus{Phase: regentv1.BackupFailed, Error: "the store answered 403 Forbidden"}
				return c.Status().Update(ctx, b)
			})
		out, err := run(ctx, kubeconfig, "-n", ns, "backup", "archived", "--name", "broken", "--wait", "--timeout", "20s")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err == nil || !strings.Contains(err.Error(), "the Backup ops/broken failed: the store answered 403 Forbidden") {
			t.Errorf("a failed backup: %v (%s)", err, out)
		}
		out, err = run(ctx, kubeconfig, "-n", ns, "backup", "archived", "--name", "broken")
		if err == nil || !strings.Contains(err.Error(), "a Backup broken already exists in namespace ops: --name gives another name") {
			t.Errorf("a Backup's name taken: %v (%s)", err, out)
		}
	})

	t.Run("backup --wait times out with the phase it sees", func(t *testing.T) {
		out, err := run(ctx, kubeconfig, "-n", ns, "backup", "archived", "--name", "stuck", "--wait", "--timeout", "1s")
		if err == nil || !strings.Contains(err.Error(), "the Backup ops/stuck has not ended after 1s (phase -)") {
			t.Errorf("a backup nobody takes: %v (%s)", err, out)
		}
	})
}
