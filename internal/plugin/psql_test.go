package plugin

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// member is a pod of cluster db with a role label (none when role is ""),
// the epoch label on a leader, and its readiness.
func member(name, role string, epoch string, ready bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: names.Labels("db")}}
	if role != "" {
		p.Labels[names.LabelRole] = role
	}
	if epoch != "" {
		p.Labels[names.LabelEpoch] = epoch
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func TestPsqlArgv(t *testing.T) {
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}}
	o := &options{kubeconfig: "/tmp/kc", context: "prod"}
	got := o.psqlArgv(rs, "db-1", true, []string{"-c", "select 1"})
	want := []string{"kubectl", "--kubeconfig", "/tmp/kc", "--context", "prod", "exec", "-i", "-t", "-n", "shop", "db-1", "-c", "postgres", "--",
		"env", "PGHOST=/regent/run", "PGPORT=5432", "PGUSER=postgres", "PGDATABASE=app",
		"sh", "-c", `PGPASSWORD="$(cat /etc/regent/secrets/superuser-password)" && export PGPASSWORD && exec psql "$@"`, "psql",
		"-c", "select 1"}
	if !slices.Equal(got, want) {
		t.Errorf("argv\n got %q\nwant %q", got, want)
	}

	// No kubeconfig or context of its own, no TTY, the spec's database.
	rs.Spec.Bootstrap.Database = "orders"
	got = (&options{}).psqlArgv(rs, "db-0", false, nil)
	want = []string{"kubectl", "exec", "-i", "-n", "shop", "db-0", "-c", "postgres", "--",
		"env", "PGHOST=/regent/run", "PGPORT=5432", "PGUSER=postgres", "PGDATABASE=orders", "sh", "-c", psqlScript, "psql"}
	if !slices.Equal(got, want) {
		t.Errorf("argv\n got %q\nwant %q", got, want)
	}
}

func TestPickPod(t *testing.T) {
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Status: regentv1.ReplicaSetStatus{Leader: "db-1", Epoch: 3, Phase: regentv1.PhaseHealthy, Members: []regentv1.MemberStatus{
			{Name: "db-0", LagBytes: ptr.To(int64(4096))},
			{Name: "db-1"},
			{Name: "db-2", LagBytes: ptr.To(int64(0))},
		}}}
	healthy := []corev1.Pod{
		member("db-0", names.RoleFollower, "", true),
		member("db-1", names.RoleLeader, "3", true),
		member("db-2", names.RoleFollower, "", true),
	}
	for _, tc := range []struct {
		name     string
		rs       *regentv1.ReplicaSet
		pods     []corev1.Pod
		pod      string
		follower bool
		want     string // the pod, or a part of the error
		wantErr  bool
	}{
		{name: "the leader by its label and the status", rs: rs, pods: healthy, want: "db-1"},
		{name: "the labelled leader when the status has none yet", pods: healthy, want: "db-1",
			rs: &regentv1.ReplicaSet{ObjectMeta: rs.ObjectMeta}},
		{name: "of two labelled, the status's", rs: rs, want: "db-1", pods: []corev1.Pod{
			member("db-0", names.RoleLeader, "2", false), member("db-1", names.RoleLeader, "3", true)}},
		{name: "of two labelled and no status, the newest epoch", want: "db-1", rs: &regentv1.ReplicaSet{ObjectMeta: rs.ObjectMeta},
			pods: []corev1.Pod{member("db-0", names.RoleLeader, "2", false), member("db-1", names.RoleLeader, "3", true)}},
		{name: "the status's leader when no pod is labelled", rs: rs, want: "db-1", pods: []corev1.Pod{
			member("db-0", "", "", false), member("db-1", "", "", false)}},
		{name: "no leader", rs: &regentv1.ReplicaSet{ObjectMeta: rs.ObjectMeta, Status: regentv1.ReplicaSetStatus{Phase: regentv1.PhaseFailingOver}},
			pods: []corev1.Pod{member("db-0", names.RoleFollower, "", true)}, wantErr: true,
			want: "shop/db has no leader (phase FailingOver): --follower or --pod POD opens psql on another member"},
		{name: "the follower least behind", rs: rs, pods: healthy, follower: true, want: "db-2"},
		{name: "a ready follower only", rs: rs, follower: true, want: "db-0", pods: []corev1.Pod{
			member("db-0", names.RoleFollower, "", true), member("db-1", names.RoleLeader, "3", true),
			member("db-2", names.RoleFollower, "", false)}},
		{name: "no ready follower", rs: rs, follower: true, wantErr: true, want: "shop/db has no ready follower",
			pods: []corev1.Pod{member("db-0", names.RoleFollower, "", false), member("db-1", names.RoleLeader, "3", true)}},
		{name: "a named member", rs: rs, pods: healthy, pod: "db-0", want: "db-0"},
		{name: "a named non-member", rs: rs, pods: healthy, pod: "db-3", wantErr: true,
			want: "db-3 is not a pod of shop/db (pods: db-0, db-1, db-2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickPod(tc.rs, tc.pods, tc.pod, tc.follower)
			switch {
			case tc.wantErr && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %q, %v; want an error saying %q", got, err, tc.want)
			case !tc.wantErr && (err != nil || got != tc.want):
				t.Errorf("got %q, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// The arguments for psql go after --, and --follower and --pod exclude
// each other: said before anything is read.
func TestPsqlArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"psql"}, "psql needs the cluster's name"},
		{[]string{"psql", "--", "-c", "select 1"}, "psql needs the cluster's name"},
		{[]string{"psql", "db", "postgres"}, "psql's arguments go after --: kubectl regent psql db -- postgres"},
		{[]string{"psql", "db", "--follower", "--pod", "db-1"}, "[follower pod] were all set"},
	} {
		root := NewRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		// A kubeconfig that is not there: nothing is reached if a check fails to stop it.
		root.SetArgs(append([]string{"--kubeconfig", "/nonexistent"}, tc.args...))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kubectl regent %s: %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
