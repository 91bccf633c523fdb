package agent

import (
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/replica/api"
)

// The members a leader's failsafe needs: none unless the operator turned
// it on and the leader's last renewal published a count for its own,
// unrevoked epoch; a member added counts at once, one removed only once
// published.
func TestTheFailsafeNeedsEveryMemberItPublished(t *testing.T) {
	on := leadership.State{Holder: "db-0", Epoch: 4, Failsafe: true, FailsafeReplicas: 3}
	for _, tc := range []struct {
		name     string
		s        leadership.State
		replicas int32
		want     []string
	}{
		{"three members", on, 3, []string{"db-1", "db-2"}},
		{"scaled up: the new member counts at once", on, 4, []string{"db-1", "db-2", "db-3"}},
		{"scaled down: the old member counts until a renewal published it", on, 2, []string{"db-1", "db-2"}},
		{"StatefulSet unknown: the published count", on, 0, []string{"db-1", "db-2"}},
		{"turned off by the operator", func() leadership.State { s := on; s.Failsafe = false; return s }(), 3, nil},
		{"nothing published yet", func() leadership.State { s := on; s.FailsafeReplicas = 0; return s }(), 3, nil},
		{"revoked", func() leadership.State { s := on; s.RevokedEpoch = 4; return s }(), 3, nil},
		{"sealed", func() leadership.State { s := on; s.SealedEpoch = 4; return s }(), 3, nil},
		{"another holder", func() leadership.State { s := on; s.Holder = "db-1"; return s }(), 3, nil},
		{"another epoch", func() leadership.State { s := on; s.Epoch = 5; return s }(), 3, nil},
		{"alone", func() leadership.State { s := on; s.FailsafeReplicas = 1; return s }(), 1, nil},
	} {
		got := failsafePeers(tc.s, "db-0", "db", 4, tc.replicas)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := failsafeReplicas(leadership.State{Failsafe: true, FailsafeReplicas: 3}, 2); got != 2 {
		t.Errorf("a renewal publishes the StatefulSet's replicas: %d", got)
	}
	if got := failsafeReplicas(leadership.State{Failsafe: true, FailsafeReplicas: 3}, 0); got != 3 {
		t.Errorf("with the replicas unknown a renewal keeps the published count: %d", got)
	}
	if got := failsafeReplicas(leadership.State{FailsafeReplicas: 3}, 3); got != 0 {
		t.Errorf("with the failsafe off a renewal publishes nothing: %d", got)
	}
}

// A follower confirms only the Lease's holder at the epoch it follows,
// never an epoch it saw revoked or sealed, not even once an older Lease
// is read again; and it records when.
func TestAFollowerConfirmsOnlyAnEpochItSawNeitherRevokedNorSealed(t *testing.T) {
	start := time.Now()
	lease := func(s leadership.State) *coordinationv1.Lease {
		l := &coordinationv1.Lease{}
		leadership.Encode(s, l)
		return l
	}
	live := leadership.State{Holder: "db-0", Epoch: 4, Failsafe: true, FailsafeReplicas: 3}
	s := &leadershipState{mode: api.ModeFollower, epoch: 4, lastConfirmed: start}
	if why := s.confirm(4, "db-0", start); !strings.Contains(why, "no Lease") {
		t.Errorf("confirmed before any Lease was read: %q", why)
	}
	s.storeLease(lease(live))
	now := start.Add(time.Second)
	if why := s.confirm(4, "db-0", now); why != "" || !s.lastConfirmed.Equal(now) || !s.confirmedAt.Equal(now) {
		t.Errorf("the holder at the epoch followed: %q, last confirmed %v", why, s.lastConfirmed)
	}
	if why := s.confirm(4, "db-2", now); why == "" {
		t.Errorf("confirmed a pod that does not hold the Lease")
	}
	if why := s.confirm(3, "db-0", now); why == "" {
		t.Errorf("confirmed an epoch it does not follow")
	}
	revoked := live
	revoked.RevokedEpoch = 4
	s.storeLease(lease(revoked))
	later := now.Add(time.Second)
	if why := s.confirm(4, "db-0", later); !strings.Contains(why, "revoked") || !s.lastConfirmed.Equal(now) {
		t.Errorf("confirmed a revoked epoch: %q", why)
	}
	s.storeLease(lease(live)) // a slow read of the Lease as it was
	if why := s.confirm(4, "db-0", later); why == "" {
		t.Errorf("confirmed an epoch it had seen revoked, after reading an older Lease")
	}
	leader := &leadershipState{mode: api.ModeLeader, epoch: 4}
	leader.storeLease(lease(live))
	if why := leader.confirm(4, "db-0", later); why == "" {
		t.Errorf("a leader confirmed another leader")
	}
}

// A follower cut off from the API server keeps taking the leader's WAL
// only while it confirms that leader's failsafe.
func TestAFollowerCutOffFollowsOnlyWhileItConfirms(t *testing.T) {
	l := &coordinationv1.Lease{}
	leadership.Encode(leadership.State{Holder: "db-0", Epoch: 4, Failsafe: true, FailsafeReplicas: 3}, l)
	t0 := time.Now()
	s := &leadershipState{mode: api.ModeFollower, epoch: 4, lastContact: t0, lastConfirmed: t0}
	s.storeLease(l)
	cut := t0.Add(time.Minute)
	if s.mayFollow(4, cut) {
		t.Errorf("followed a minute after its last contact, confirming nothing")
	}
	if why := s.confirm(4, "db-0", cut); why != "" {
		t.Fatal(why)
	}
	if !s.mayFollow(4, cut.Add(time.Second)) {
		t.Errorf("stopped following while confirming the leader's failsafe")
	}
	if s.mayFollow(4, cut.Add(failsafeTTL+time.Millisecond)) {
		t.Errorf("followed after its confirmation expired")
	}
}
