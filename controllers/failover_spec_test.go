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

// With dataDurability Preferred, followers the operator has seen unable to
// confirm commits for longer than the lease duration, by its own clock,
// leave the quorum when fewer than syncReplicas remain, so that writes go
// on; with Required, and while followers are only briefly away (a
// restart, a failover's reconnection), the quorum stays. Unready pods
// carry a Ready condition an hour old: what the pod says of its past never
// shortens the operator's wait.
func TestPreferredQuorumLeavesOutFollowersLostForLongerThanTheLease(t *testing.T) {
	now := time.Now()
	const lease = 10 * time.Second
	ready := func(name string) corev1.Pod { return podWithReady(name, corev1.ConditionTrue, now.Add(-time.Hour)) }
	unready := func(name string) corev1.Pod { return podWithReady(name, corev1.ConditionFalse, now.Add(-time.Hour)) }
	streaming := &api.Status{Mode: api.ModeFollower, Streaming: true, Epoch: 1}
	for _, tc := range []struct {
		name       string
		durability regentv1.DataDurability
		k          int32
		pods       []corev1.Pod
		agents     map[string]*api.Status
		// unstandingFor: how long ago the operator first saw each
		// follower unable to confirm commits (absent: just now).
		unstandingFor map[string]time.Duration
		current       string // synchronous standbys on the Lease
		want          string
		wantRecheck   time.Duration
		wantLowered   bool
	}{
		{name: "all ready", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), ready("db-2")},
			want: `ANY 2 ("db_1", "db_2")`},
		{name: "one seen lost for longer than the lease", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-2": 11 * time.Second},
			want:          `ANY 1 ("db_1")`, wantLowered: true},
		{name: "one seen lost for less than the lease", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-2": 4 * time.Second},
			want:          `ANY 2 ("db_1", "db_2")`, wantRecheck: 6 * time.Second},
		{name: "unready for an hour by its condition, first seen lost now", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-2": 0},
			want:          `ANY 2 ("db_1", "db_2")`, wantRecheck: lease},
		{name: "unready, not yet in the operator's memory", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			want: `ANY 2 ("db_1", "db_2")`, wantRecheck: lease},
		{name: "unready but its agent streams", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			agents:        map[string]*api.Status{"db-2": streaming},
			unstandingFor: map[string]time.Duration{"db-2": time.Minute},
			want:          `ANY 2 ("db_1", "db_2")`},
		{name: "one pod missing for longer than the lease", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1")},
			unstandingFor: map[string]time.Duration{"db-2": 11 * time.Second},
			want:          `ANY 1 ("db_1")`, wantLowered: true},
		{name: "one pod missing for less than the lease (recreated)", durability: regentv1.DataDurabilityPreferred, k: 2,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1")},
			unstandingFor: map[string]time.Duration{"db-2": time.Second},
			want:          `ANY 2 ("db_1", "db_2")`, wantRecheck: 9 * time.Second},
		{name: "fewer lost than the quorum needs", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods:          []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-2": time.Minute},
			want:          `ANY 1 ("db_1", "db_2")`},
		{name: "all lost: the commit gate", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods:          []corev1.Pod{ready("db-0"), unready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-1": time.Minute, "db-2": time.Minute},
			want:          names.CommitGateStandbys, wantLowered: true},
		{name: "one lost, one catching up: the commit gate", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/3000000"}},
			unstandingFor: map[string]time.Duration{"db-2": time.Minute},
			want:          names.CommitGateStandbys, wantLowered: true},
		{name: "one lost, one catching up that the quorum in force names", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/3000000"}},
			unstandingFor: map[string]time.Duration{"db-2": time.Minute},
			current:       `ANY 1 ("db_1", "db_2")`,
			want:          `ANY 1 ("db_1", "db_2")`},
		{name: "one lost, one caught up", durability: regentv1.DataDurabilityPreferred, k: 1,
			pods: []corev1.Pod{ready("db-0"), ready("db-1"), unready("db-2")},
			agents: map[string]*api.Status{"db-0": {Mode: api.ModeLeader, Epoch: 1, WriteLSN: "0/9000000"},
				"db-1": {Mode: api.ModeFollower, Streaming: true, Epoch: 1, ReceivedLSN: "0/8F00000"}},
			unstandingFor: map[string]time.Duration{"db-2": time.Minute},
			want:          `ANY 1 ("db_1", "db_2")`},
		{name: "Required keeps the quorum", durability: regentv1.DataDurabilityRequired, k: 2,
			pods:          []corev1.Pod{ready("db-0"), unready("db-1"), unready("db-2")},
			unstandingFor: map[string]time.Duration{"db-1": time.Minute, "db-2": time.Minute},
			want:          `ANY 2 ("db_1", "db_2")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := preferredReplicaSet(tc.k, tc.durability, lease)
			obs := &observation{pods: tc.pods, agents: tc.agents, unstandingSince: map[string]time.Time{},
				lease: &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](1)}}}
			for pod, ago := range tc.unstandingFor {
				obs.unstandingSince[pod] = now.Add(-ago)
			}
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

// The operator times a follower's absence on its own clock, from the first
// pass that sees it unable to confirm commits, whatever its pod's
// conditions say of earlier moments; a follower seen standing again starts
// afresh. Passes a second apart: db-2 streams (its pod was never seen
// ready), freezes, and is lowered out only a full lease after the freeze.
func TestOperatorClocksAFollowersAbsenceItself(t *testing.T) {
	const lease = 6 * time.Second
	start := time.Now()
	rs := preferredReplicaSet(2, regentv1.DataDurabilityPreferred, lease)
	// The pod's Ready condition is False from its creation, an hour ago:
	// the kubelet had not yet reported it ready when it froze.
	pods := []corev1.Pod{podWithReady("db-0", corev1.ConditionTrue, start.Add(-time.Hour)),
		podWithReady("db-1", corev1.ConditionTrue, start.Add(-time.Hour)),
		podWithReady("db-2", corev1.ConditionFalse, start.Add(-time.Hour))}
	streaming := &api.Status{Mode: api.ModeFollower, Streaming: true, Epoch: 1}
	mem := &clusterMemory{}
	pass := func(at time.Duration, db2 *api.Status) string {
		now := start.Add(at)
		obs := &observation{pods: pods, agents: map[string]*api.Status{"db-2": db2},
			lease: &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](1)}}}
		obs.unstandingSince = mem.noteStanding(rs, obs, now)
		got, _ := syncStandbyNames(rs, obs, "db-0", now)
		return got
	}
	full, lowered := `ANY 2 ("db_1", "db_2")`, `ANY 1 ("db_1")`
	for _, step := range []struct {
		at   time.Duration
		db2  *api.Status
		want string
	}{
		{at: 0, db2: streaming, want: full},
		{at: time.Second, db2: nil, want: full}, // frozen: first seen gone
		{at: 2 * time.Second, db2: nil, want: full},
		{at: 6 * time.Second, db2: nil, want: full}, // 5 s seen gone
		{at: 7 * time.Second, db2: nil, want: lowered},
		{at: 8 * time.Second, db2: streaming, want: full}, // back
		{at: 9 * time.Second, db2: nil, want: full},       // gone again: a new clock
		{at: 14 * time.Second, db2: nil, want: full},
		{at: 15 * time.Second, db2: nil, want: lowered},
	} {
		if got := pass(step.at, step.db2); got != step.want {
			t.Errorf("pass at +%s (db-2 streaming: %v): %q, want %q", step.at, step.db2 != nil, got, step.want)
		}
	}
}

func preferredReplicaSet(k int32, durability regentv1.DataDurability, lease time.Duration) *regentv1.ReplicaSet {
	rs := &regentv1.ReplicaSet{}
	rs.Name = "db"
	rs.Spec.Replicas = ptr.To[int32](3)
	rs.Spec.Replication.Mode = regentv1.ReplicationSync
	rs.Spec.Replication.SyncReplicas = ptr.To(k)
	rs.Spec.Replication.DataDurability = durability
	rs.Spec.Failover.LeaseDurationSeconds = ptr.To(int32(lease / time.Second))
	return rs
}

func podWithReady(name string, status corev1.ConditionStatus, since time.Time) corev1.Pod {
	p := corev1.Pod{}
	p.Name = name
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status,
		LastTransitionTime: metav1.NewTime(since)}}
	return p
}
