package agent

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/replica/instance"
)

// What the agent does with its PostgreSQL in each state it can observe, in
// the style of the operator's TestDecide. Each row is a rule of
// docs/protocol.md or docs/data-plane.md.
func TestPlan(t *testing.T) {
	ready := string(instance.DataReady)
	empty := string(instance.DataEmpty)
	leaderPG := instance.Status{Running: true, Data: ready}
	followerPG := instance.Status{Running: true, InRecovery: true, Data: ready}
	stopped := instance.Status{Data: ready, ClusterState: "shut down in recovery"}
	lead := func(pg instance.Status, f func(*observed)) observed {
		o := observed{Lead: true, Self: "db-0", Holder: "db-0", Epoch: 3, FirstEpoch: 1, PG: pg}
		if f != nil {
			f(&o)
		}
		return o
	}
	follow := func(pg instance.Status, f func(*observed)) observed {
		o := observed{Self: "db-1", Holder: "db-0", Epoch: 3, PG: pg}
		if f != nil {
			f(&o)
		}
		return o
	}
	for _, tc := range []struct {
		name string
		in   observed
		want step
	}{
		// Leading.
		{"a serving leader past its renew deadline fences", lead(leaderPG, func(o *observed) { o.DeadlinePassed = true }), stepFence},
		{"a promoting leader past its deadline fences nothing yet: nothing serves",
			lead(followerPG, func(o *observed) { o.DeadlinePassed = true }), stepAwaitRenewal},
		{"a stopped leader past its deadline waits for a renewal, never starts",
			lead(stopped, func(o *observed) { o.DeadlinePassed = true }), stepAwaitRenewal},
		{"the deadline comes before a handover",
			lead(leaderPG, func(o *observed) { o.DeadlinePassed, o.HandOverTo = true, "db-1" }), stepFence},
		{"the first leader of a new cluster runs initdb", lead(instance.Status{Data: empty}, func(o *observed) { o.Epoch = 1 }), stepInitdb},
		{"an empty leader past the first epoch never runs initdb", lead(instance.Status{Data: empty}, nil), stepRefuseInitdb},
		{"the first leader of a restored cluster restores, at the Lease's first epoch", lead(instance.Status{Data: empty}, func(o *observed) {
			o.Epoch, o.FirstEpoch, o.Restore = 7, 7, true
		}), stepRestore},
		{"an empty leader of a restored cluster past its first epoch never restores", lead(instance.Status{Data: empty}, func(o *observed) {
			o.Epoch, o.FirstEpoch, o.Restore = 8, 7, true
		}), stepRefuseInitdb},
		{"a first epoch that cannot be read creates no data", lead(instance.Status{Data: empty}, func(o *observed) {
			o.Epoch, o.FirstEpoch = 1, 0
		}), stepRefuseInitdb},
		{"asked to hand over, a serving leader stops cleanly and releases",
			lead(leaderPG, func(o *observed) { o.HandOverTo = "db-1" }), stepHandOver},
		{"a handover to itself is no handover", lead(leaderPG, func(o *observed) { o.HandOverTo = "db-0" }), stepServe},
		{"a handover asked of a leader not serving yet waits for it to serve",
			lead(followerPG, func(o *observed) { o.HandOverTo = "db-1" }), stepPromote},
		{"a leader's PostgreSQL silent past the start timeout, with others to lead: stop and release",
			lead(instance.Status{Running: true, Data: ready}, func(o *observed) { o.StartTimedOut = true }), stepAbandonStart},
		{"a leader's PostgreSQL that answers is served whatever the clock says",
			lead(instance.Status{Running: true, Accepting: true, Data: ready}, func(o *observed) { o.StartTimedOut = true }), stepServe},
		{"a leader's PostgreSQL still silent within the start timeout is waited for",
			lead(instance.Status{Running: true, Data: ready}, nil), stepServe},
		{"instance not answering yet under a restarted agent: no start, so no failed start and no release",
			lead(instance.Status{}, func(o *observed) { o.InstanceDown = true }), stepAwaitInstance},
		{"instance gone under the agent that ran PostgreSQL in this epoch: release (its container took PostgreSQL along)",
			lead(instance.Status{}, func(o *observed) { o.InstanceDown, o.LedThisEpoch = true, true }), stepRelease},
		{"instance silent past the start timeout under a leader, with others to lead: release",
			lead(instance.Status{}, func(o *observed) { o.InstanceDown, o.StartTimedOut = true, true }), stepRelease},
		{"a follower whose instance does not answer waits for it",
			follow(instance.Status{}, func(o *observed) { o.InstanceDown = true }), stepAwaitInstance},
		{"PostgreSQL died under this agent's leadership of the epoch: release",
			lead(stopped, func(o *observed) { o.LedThisEpoch = true }), stepRelease},
		{"stopped by this agent's own fence: start again once renewed, not release",
			lead(stopped, func(o *observed) { o.LedThisEpoch, o.WasFenced = true, true }), stepStartLeader},
		{"stopped by the watchdog: start again once renewed, not release",
			lead(instance.Status{Data: ready, Fenced: "deadline passed"}, func(o *observed) { o.LedThisEpoch = true }), stepStartLeader},
		{"elected again at a new epoch over data that died earlier: start", lead(stopped, nil), stepStartLeader},
		{"a follower elected leader promotes", lead(followerPG, nil), stepPromote},
		{"a serving leader serves", lead(leaderPG, nil), stepServe},

		// Following.
		{"a pod that no longer leads stops its serving PostgreSQL at once", follow(leaderPG, nil), stepDemote},
		{"demoted even while no one holds the Lease", follow(leaderPG, func(o *observed) { o.Holder = "" }), stepDemote},
		{"a PostgreSQL started as a leader and not answering yet is stopped too",
			follow(instance.Status{Running: true, Role: instance.RoleLeader, Data: ready}, nil), stepDemote},
		{"a follower still starting (not answering yet) is left to start, not stopped",
			follow(instance.Status{Running: true, Role: instance.RoleFollower, Data: ready}, nil), stepFollow},
		{"no holder: nothing to follow", follow(stopped, func(o *observed) { o.Holder = "" }), stepAwaitLeader},
		{"the Lease names this pod but it does not lead (unlabelled, sealed): wait",
			follow(stopped, func(o *observed) { o.Holder = "db-1" }), stepAwaitLeader},
		{"an empty follower clones the leader", follow(instance.Status{Data: empty}, nil), stepClone},
		{"a former leader's data stopped in production is rewound first",
			follow(instance.Status{Data: ready, ClusterState: "in production"}, nil), stepRewind},
		{"a former leader's data shut down cleanly is rewound first",
			follow(instance.Status{Data: ready, ClusterState: "shut down"}, nil), stepRewind},
		{"a follower's data starts as a follower", follow(stopped, nil), stepStartFollower},
		{"a following follower follows", follow(followerPG, nil), stepFollow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := plan(tc.in); got != tc.want {
				t.Errorf("plan(%+v) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// The gate and the relay's leader end ask one predicate: no acknowledgement
// and no WAL of an epoch after its renew deadline, once fenced, or once the
// agent no longer leads it.
func TestMayAck(t *testing.T) {
	now := testNow
	for _, tc := range []struct {
		name  string
		state func(*leadershipState)
		epoch int64
		want  bool
	}{
		{"leader before its deadline", func(*leadershipState) {}, 3, true},
		{"at the deadline", func(s *leadershipState) { s.deadline = now }, 3, false},
		{"past the deadline", func(s *leadershipState) { s.deadline = now.Add(-1) }, 3, false},
		{"fenced", func(s *leadershipState) { s.fenced = true }, 3, false},
		{"another epoch", func(*leadershipState) {}, 2, false},
		{"a follower", func(s *leadershipState) { s.mode = "Follower" }, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &leadershipState{mode: "Leader", epoch: 3, deadline: now.Add(time.Second)}
			tc.state(s)
			if got := s.mayAck(tc.epoch, now); got != tc.want {
				t.Errorf("mayAck = %v, want %v", got, tc.want)
			}
		})
	}
}

var testNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// A follower's relay forwards WAL of an epoch only while its agent follows
// that epoch, the Lease it last read still has it unsealed, and it heard
// from the API server within the renew deadline (2/3 of 9 s here).
func TestMayFollow(t *testing.T) {
	now := testNow
	lease := func(s leadership.State) *coordinationv1.Lease {
		l := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](9)}}
		leadership.Encode(s, l)
		return l
	}
	for _, tc := range []struct {
		name  string
		state func(*leadershipState)
		want  bool
	}{
		{"following an unsealed epoch, in contact", func(*leadershipState) {}, true},
		{"contact 6 s ago", func(s *leadershipState) { s.lastContact = now.Add(-6 * time.Second) }, true},
		{"contact 7 s ago: past the renew deadline", func(s *leadershipState) { s.lastContact = now.Add(-7 * time.Second) }, false},
		{"the epoch sealed", func(s *leadershipState) {
			s.lease = lease(leadership.State{Holder: "db-0", Epoch: 3, SealedEpoch: 3})
		}, false},
		{"the Lease moved on", func(s *leadershipState) { s.lease = lease(leadership.State{Holder: "db-2", Epoch: 4}) }, false},
		{"the agent moved on", func(s *leadershipState) { s.epoch = 4 }, false},
		{"no Lease read yet", func(s *leadershipState) { s.lease = nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &leadershipState{mode: "Follower", epoch: 3, lastContact: now.Add(-time.Second),
				lease: lease(leadership.State{Holder: "db-0", Epoch: 3, SealedEpoch: 2})}
			tc.state(s)
			if got := s.mayFollow(3, now); got != tc.want {
				t.Errorf("mayFollow = %v, want %v", got, tc.want)
			}
		})
	}
}
