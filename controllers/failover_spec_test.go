package controllers

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
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
		got, _ := syncStandbys(rs, obs, "db-0", now)
		return got.String()
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

// The operator compares no other machine's clock with its own: an agent
// reports how long ago it reached the API server (its clock may be an hour
// off), and the followers' wait after a seal runs from when this operator
// saw the seal, whatever sealed-at (another operator's clock) says.
func TestTheOperatorComparesNoOtherMachinesClockWithItsOwn(t *testing.T) {
	now := time.Now()
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"}}
	lease := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](3),
		LeaseDurationSeconds: ptr.To[int32](6)}}
	leadership.Encode(leadership.State{Epoch: 3, SealedEpoch: 3, SealedAt: now.Add(-time.Hour)}, lease)
	follower := func(since time.Duration) *api.Status {
		return &api.Status{Mode: api.ModeFollower, Running: true, InRecovery: true, Epoch: 3,
			SinceAPIContact: &metav1.Duration{Duration: since}}
	}
	obs := &observation{lease: lease, pods: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "db-1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "db-2"}}},
		agents: map[string]*api.Status{"db-1": follower(time.Second), "db-2": follower(time.Hour)}}
	r := &ReplicaSetReconciler{}
	in := r.failoverInput(rs, obs, now, now)
	contact := map[string]time.Time{}
	for _, m := range in.Members {
		contact[m.Name] = m.APIContact
	}
	if got := contact["db-1"]; !got.Equal(now.Add(-time.Second)) {
		t.Errorf("db-1 reached the API server 1 s before it answered: placed at %s, want %s", got, now.Add(-time.Second))
	}
	if got := contact["db-2"]; !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("db-2 reached the API server an hour before it answered: placed at %s", got)
	}
	if !in.Lease.SealedAt.Equal(now) {
		t.Errorf("the followers' wait runs from %s (sealed-at says an hour ago); want from when this operator saw the seal, %s",
			in.Lease.SealedAt, now)
	}
	if later := r.failoverInput(rs, obs, now.Add(3*time.Second), now.Add(3*time.Second)); !later.Lease.SealedAt.Equal(now) {
		t.Errorf("a later pass moved the seal's time to %s", later.Lease.SealedAt)
	}
}
