package controllers

import (
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// The leader fences at 2/3 of the duration on the Lease: a lease shortened
// in the spec must not make the operator expire it sooner (it could still
// write), while a lengthened one is waited for at once.
func TestFailoverWaitsForTheLongerOfTheSpecsAndTheLeasesDuration(t *testing.T) {
	for _, tc := range []struct {
		spec, lease int32
		want        time.Duration
	}{
		{spec: 3, lease: 10, want: 10 * time.Second},
		{spec: 20, lease: 10, want: 20 * time.Second},
		{spec: 10, lease: 10, want: 10 * time.Second},
	} {
		rs := &regentv1.ReplicaSet{}
		rs.Spec.Failover.LeaseDurationSeconds = ptr.To(tc.spec)
		lease := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To(tc.lease)}}
		if got := failoverSpec(rs, lease).LeaseDuration; got != tc.want {
			t.Errorf("spec %ds, Lease %ds: the operator waits %s, want %s", tc.spec, tc.lease, got, tc.want)
		}
	}
}

// The election reads the acknowledgement rules back from the Lease: what
// the operator writes must parse into the pods it names.
func TestParseQuorumReadsWhatTheOperatorWrites(t *testing.T) {
	rs := &regentv1.ReplicaSet{}
	rs.Name = "db"
	rs.Spec.Replicas = ptr.To[int32](4)
	rs.Spec.Replication.Mode = regentv1.ReplicationSync
	rs.Spec.Replication.SyncReplicas = ptr.To[int32](2)
	written, _ := syncStandbyNames(rs, &observation{}, "db-1", time.Now())
	q, ok := parseQuorum(written)
	if !ok || q.K != 2 || !slices.Equal(q.Members, []string{"db-0", "db-2", "db-3"}) {
		t.Errorf("%q parsed as %+v, %v", written, q, ok)
	}
	for _, s := range []string{"", names.CommitGateStandbys, "ANY x (\"a\")", "ANY 1 ()"} {
		if _, ok := parseQuorum(s); ok {
			t.Errorf("%q parsed as a quorum", s)
		}
	}
}

// With dataDurability Preferred, followers unready for longer than the
// lease duration leave the quorum when fewer than syncReplicas remain, so
// that writes go on; with Required, and while followers are only briefly
// away (a restart, a failover's reconnection), the quorum stays.
func TestPreferredQuorumLeavesOutFollowersLostForLongerThanTheLease(t *testing.T) {
	now := time.Now()
	const lease = 10 * time.Second
	ready := func(name string) corev1.Pod { return podWithReady(name, corev1.ConditionTrue, now.Add(-time.Hour)) }
	unreadySince := func(name string, ago time.Duration) corev1.Pod {
		return podWithReady(name, corev1.ConditionFalse, now.Add(-ago))
	}
	streaming := &api.Status{Mode: api.ModeFollower, Streaming: true, Epoch: 1}
	for _, tc := range []struct {
		name        string
		durability  regentv1.DataDurability
		k           int32
		pods        []corev1.Pod
		agents      map[string]*api.Status
		current     string // synchronous standbys on the Lease
		want        string
		wantRecheck time.Duration
		wantLowered bool
	}{
		{name: "all ready", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), ready("db-2")},
			want: `ANY 2 ("db_1", "db_2")`},
		{name: "one lost for longer than the lease", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", 11*time.Second)},
			want: `ANY 1 ("db_1")`, wantLowered: true},
		{name: "one unready for less than the lease", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", 4*time.Second)},
			want: `ANY 2 ("db_1", "db_2")`, wantRecheck: 6 * time.Second},
		{name: "unready but its agent streams", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:   []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", time.Minute)},
			agents: map[string]*api.Status{"db-2": streaming},
			want:   `ANY 2 ("db_1", "db_2")`},
		{name: "one pod missing", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1")},
			want: `ANY 1 ("db_1")`, wantLowered: true},
		{name: "fewer lost than the quorum needs", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", time.Minute)},
			want: `ANY 1 ("db_1", "db_2")`},
		{name: "all lost: the commit gate", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), unreadySince("db-1", time.Minute), unreadySince("db-2", time.Minute)},
			want: names.CommitGateStandbys, wantLowered: true},
		{name: "one lost, one catching up: the commit gate", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", time.Minute)},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/3000000"}},
			want: names.CommitGateStandbys, wantLowered: true},
		{name: "one lost, one catching up that the quorum in force names", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", time.Minute)},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/3000000"}},
			current: `ANY 1 ("db_1", "db_2")`,
			want:    `ANY 1 ("db_1", "db_2")`},
		{name: "one lost, one caught up", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unreadySince("db-2", time.Minute)},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/8F00000"}},
			want: `ANY 1 ("db_1", "db_2")`},
		{name: "Required keeps the quorum", durability: regentv1.DataDurabilityRequired, k: 2,
			pods: []corev1.Pod{ready("db-0"), unreadySince("db-1", time.Minute), unreadySince("db-2", time.Minute)},
			want: `ANY 2 ("db_1", "db_2")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &regentv1.ReplicaSet{}
			rs.Name = "db"
			rs.Spec.Replicas = ptr.To[int32](3)
			rs.Spec.Replication.Mode = regentv1.ReplicationSync
			rs.Spec.Replication.SyncReplicas = ptr.To(tc.k)
			rs.Spec.Replication.DataDurability = tc.durability
			rs.Spec.Failover.LeaseDurationSeconds = ptr.To(int32(lease / time.Second))
			obs := &observation{pods: tc.pods, agents: tc.agents,
				lease: &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](1)}}}
			if tc.current != "" {
				obs.lease.Annotations = map[string]string{names.AnnotationSyncStandbys: tc.current}
			}
			got, recheck := syncStandbyNames(rs, obs, "db-0", now)
			if got != tc.want {
				t.Errorf("synchronous_standby_names %q, want %q", got, tc.want)
			}
			if recheck != tc.wantRecheck {
				t.Errorf("recheck in %s, want %s", recheck, tc.wantRecheck)
			}
			if lowered := quorumLowered(rs, got); lowered != tc.wantLowered {
				t.Errorf("quorumLowered(%q) = %v, want %v", got, lowered, tc.wantLowered)
			}
		})
	}
}

func podWithReady(name string, status corev1.ConditionStatus, since time.Time) corev1.Pod {
	p := corev1.Pod{}
	p.Name = name
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status,
		LastTransitionTime: metav1.NewTime(since)}}
	return p
}
