package controllers

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
)

// healthy is a 3-pod cluster whose ready leader db-0 serves epoch 2.
func healthy(change func(*statusFacts)) statusFacts {
	f := statusFacts{desired: 3, replicas: 3, ready: 3, epoch: 2,
		leader: &regentv1.MemberStatus{Name: "db-0", Ready: true, Role: regentv1.RoleLeader}}
	if change != nil {
		change(&f)
	}
	return f
}

func unreadyLeader(f *statusFacts) {
	f.leader = &regentv1.MemberStatus{Name: "db-0", Role: regentv1.RoleLeader}
	f.ready = 2
}

type conditionCase struct {
	name       string
	facts      statusFacts
	wantStatus metav1.ConditionStatus
	wantReason string
}

func checkConditions(t *testing.T, set func(statusFacts) metav1.Condition, cases []conditionCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := set(tc.facts)
			if c.Status != tc.wantStatus || c.Reason != tc.wantReason {
				t.Errorf("%s=%s (%s: %q), want %s (%s)", c.Type, c.Status, c.Reason, c.Message, tc.wantStatus, tc.wantReason)
			}
		})
	}
}

func TestAvailableCondition(t *testing.T) {
	checkConditions(t, availableCondition, []conditionCase{
		{"a ready leader", healthy(nil), metav1.ConditionTrue, regentv1.ReasonLeaderReady},
		{"a leader not ready", healthy(unreadyLeader), metav1.ConditionFalse, regentv1.ReasonLeaderNotReady},
		{"no leader", healthy(func(f *statusFacts) { f.leader = nil }), metav1.ConditionFalse, regentv1.ReasonNoLeader},
	})
	c := availableCondition(healthy(func(f *statusFacts) {
		unreadyLeader(f)
		f.leaderReason = ": password authentication failed"
	}))
	if c.Message != "db-0 leads epoch 2 but is not ready: password authentication failed" {
		t.Errorf("a leader not ready does not say its agent's reason: %q", c.Message)
	}
}

func TestProgressingCondition(t *testing.T) {
	checkConditions(t, progressingCondition, []conditionCase{
		{"every pod ready", healthy(nil), metav1.ConditionFalse, regentv1.ReasonReconciled},
		{"scaling", healthy(func(f *statusFacts) { f.desired = 5 }), metav1.ConditionTrue, regentv1.ReasonScaling},
		{"creating", healthy(func(f *statusFacts) { f.ready, f.creating = 1, true }), metav1.ConditionTrue, regentv1.ReasonCreating},
		{"a pod not ready", healthy(func(f *statusFacts) { f.ready = 2 }), metav1.ConditionTrue, regentv1.ReasonReplicasNotReady},
	})
}

func TestDegradedCondition(t *testing.T) {
	wait := &failover.Decision{Kind: failover.Wait, Reason: "waiting for db-2"}
	refuse := &failover.Decision{Kind: failover.Refuse, Reason: "failover is disabled"}
	checkConditions(t, degradedCondition, []conditionCase{
		{"nothing missing", healthy(nil), metav1.ConditionFalse, regentv1.ReasonAllReplicasReady},
		{"a follower not ready", healthy(func(f *statusFacts) { f.ready = 2 }), metav1.ConditionTrue, regentv1.ReasonFollowersNotReady},
		{"no ready leader", healthy(unreadyLeader), metav1.ConditionTrue, regentv1.ReasonLeaderNotReady},
		{"being created", healthy(func(f *statusFacts) { unreadyLeader(f); f.creating = true }), metav1.ConditionFalse, regentv1.ReasonCreating},
		{"a step failed", healthy(func(f *statusFacts) { f.reconcileErr, f.failedStep = errors.New("x"), "apply Services" }),
			metav1.ConditionTrue, regentv1.ReasonReconcileFailed},
		{"a name taken", healthy(func(f *statusFacts) { f.foreign = &ForeignObjectError{Kind: "Service", Name: "db-leader"} }),
			metav1.ConditionTrue, regentv1.ReasonNameTaken},
		{"a failover waiting on a sealed epoch", healthy(func(f *statusFacts) { unreadyLeader(f); f.decision, f.blocked = wait, true }),
			metav1.ConditionTrue, regentv1.ReasonFailoverBlocked},
		{"a failover waiting for the lease to expire blocks nothing yet", healthy(func(f *statusFacts) { f.decision = wait }),
			metav1.ConditionFalse, regentv1.ReasonAllReplicasReady},
		{"a failover refused", healthy(func(f *statusFacts) { unreadyLeader(f); f.decision = refuse }),
			metav1.ConditionTrue, regentv1.ReasonFailoverRefused},
		{"a switchover refused comes first", healthy(func(f *statusFacts) { f.decision, f.switchoverRefused = refuse, "db-7 does not exist" }),
			metav1.ConditionTrue, regentv1.ReasonSwitchoverRefused},
		{"a volume filling", healthy(func(f *statusFacts) { f.filling = "db-1 85%" }), metav1.ConditionTrue, regentv1.ReasonDiskFilling},
		{"a volume filling comes before a follower not ready", healthy(func(f *statusFacts) { f.filling, f.ready = "db-1 85%", 2 }),
			metav1.ConditionTrue, regentv1.ReasonDiskFilling},
	})
}

// A volume counts as filling from 80 % full; a member that did not report
// its disk is not counted.
func TestFillingVolumes(t *testing.T) {
	gib := int64(1 << 30)
	member := func(name string, used int64) regentv1.MemberStatus {
		return regentv1.MemberStatus{Name: name, DiskUsedBytes: ptr.To(used), DiskCapacityBytes: ptr.To(gib)}
	}
	got := fillingVolumes([]regentv1.MemberStatus{member("db-0", gib*79/100), member("db-1", gib*80/100+1),
		member("db-2", gib), {Name: "db-3"}})
	if got != "db-1 80%, db-2 100%" {
		t.Errorf("filling: %q", got)
	}
}

func TestFailingOverCondition(t *testing.T) {
	checkConditions(t, failingOverCondition, []conditionCase{
		{"no decision", healthy(nil), metav1.ConditionFalse, regentv1.ReasonIdle},
		{"nothing to do", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.None} }),
			metav1.ConditionFalse, regentv1.ReasonIdle},
		{"sealing", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Seal} }),
			metav1.ConditionTrue, regentv1.ReasonSealing},
		{"waiting", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Wait} }),
			metav1.ConditionTrue, regentv1.ReasonElecting},
		{"promoting", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Promote} }),
			metav1.ConditionTrue, regentv1.ReasonElecting},
		{"refused", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Refuse} }),
			metav1.ConditionFalse, regentv1.ReasonFailoverRefused},
	})
}

func TestPhase(t *testing.T) {
	for _, tc := range []struct {
		name  string
		facts statusFacts
		want  regentv1.Phase
	}{
		{"healthy", healthy(nil), regentv1.PhaseHealthy},
		{"degraded", healthy(func(f *statusFacts) { f.ready = 2 }), regentv1.PhaseDegraded},
		{"unavailable", healthy(unreadyLeader), regentv1.PhaseUnavailable},
		{"creating", healthy(func(f *statusFacts) { unreadyLeader(f); f.creating = true }), regentv1.PhaseCreating},
		{"sealing", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Seal} }), regentv1.PhaseFailingOver},
		{"waiting on a sealed epoch", healthy(func(f *statusFacts) { f.decision, f.blocked = &failover.Decision{Kind: failover.Wait}, true }),
			regentv1.PhaseFailingOver},
		{"waiting for an expiry", healthy(func(f *statusFacts) { f.decision = &failover.Decision{Kind: failover.Wait} }), regentv1.PhaseHealthy},
	} {
		if got := phase(tc.facts); got != tc.want {
			t.Errorf("%s: phase %s, want %s", tc.name, got, tc.want)
		}
	}
}
