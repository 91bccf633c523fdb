package agent

import "github.com/regent-dev/regent/replica/instance"

// The agent's choices, as a pure function of what a pass observed: the
// pass (pass.go) observes, plan decides one step, and the pass carries it
// out. Every safety rule of the in-pod side that depends on the observed
// state is a case here, with a table test (plan_test.go).

// step is what a pass does to its PostgreSQL.
type step string

const (
	// As leader (the agent holds the Lease at its pod's labelled,
	// unsealed epoch).

	// stepFence: the renew deadline passed with PostgreSQL serving:
	// stop it at once (the watchdog does the same).
	stepFence step = "Fence"
	// stepAwaitRenewal: the deadline passed and nothing serves; wait for
	// a renewal of the still-held Lease.
	stepAwaitRenewal step = "AwaitRenewal"
	// stepRefuseInitdb: an empty data directory past the first epoch:
	// the cluster's data is elsewhere, initdb would fork it.
	stepRefuseInitdb step = "RefuseInitdb"
	// stepInitdb: the first leader of a new cluster creates its data.
	stepInitdb step = "Initdb"
	// stepRestore: the first leader of a cluster bootstrapped from a
	// backup restores it (docs/backup.md).
	stepRestore step = "Restore"
	// stepHandOver: the operator asked for a switchover: stop cleanly
	// and release with the final position.
	stepHandOver step = "HandOver"
	// stepRelease: PostgreSQL died under this agent's leadership of the
	// epoch: release the Lease so that the operator fails over at once.
	stepRelease step = "Release"
	// stepAbandonStart: PostgreSQL was started as the leader but has not
	// answered within the start timeout, and others could lead: stop it
	// and release the Lease (position unknown: the operator seals and
	// elects).
	stepAbandonStart step = "AbandonStart"
	// stepStartLeader: start PostgreSQL as the leader.
	stepStartLeader step = "StartLeader"
	// stepPromote: a follower's PostgreSQL becomes the leader.
	stepPromote step = "Promote"
	// stepServe: the leader serves; refresh the watchdog, apply the
	// synchronous standbys.
	stepServe step = "Serve"

	// As follower.

	// stepDemote: PostgreSQL runs as a leader but this pod does not
	// lead: stop it at once, it rejoins on a later pass.
	stepDemote step = "Demote"
	// stepAwaitLeader: no other pod holds the Lease.
	stepAwaitLeader step = "AwaitLeader"
	// stepClone: an empty data directory: a base backup from the leader.
	stepClone step = "Clone"
	// stepRewind: stopped data that was last a leader's may hold writes
	// the leader never had: take it back to the fork first.
	stepRewind step = "Rewind"
	// stepStartFollower: start PostgreSQL as a follower of the holder.
	stepStartFollower step = "StartFollower"
	// stepFollow: PostgreSQL follows; nothing to do.
	stepFollow step = "Follow"

	// Either way.

	// stepAwaitInstance: instance does not answer (its container starts
	// after the agent's): nothing is known of PostgreSQL, so nothing is
	// started, and a start that cannot be made is no failed start.
	stepAwaitInstance step = "AwaitInstance"
)

// observed is what plan decides on.
type observed struct {
	// Lead: the agent leads (see leaderIntent). Self and Holder name this
	// pod and the Lease holder; Epoch is the Lease's.
	Lead         bool
	Self, Holder string
	Epoch        int64
	// FirstEpoch is the cluster's first (the Lease's), the only one whose
	// leader creates the data; Restore says it does so from a backup.
	FirstEpoch int64
	Restore    bool
	// DeadlinePassed: no renewal moved the renew deadline past now.
	DeadlinePassed bool
	// HandOverTo is the switchover target the operator set ("" for none).
	HandOverTo string
	// WasFenced: this agent stopped its leader for want of a renewal (it
	// may serve again once it renews its still-held Lease).
	WasFenced bool
	// LedThisEpoch: this agent ran PostgreSQL as the leader of Epoch.
	LedThisEpoch bool
	// StartTimedOut: PostgreSQL has run without answering (or instance
	// has not answered) for longer than the leader's start timeout, and
	// the cluster has other members.
	StartTimedOut bool
	// InstanceDown: instance did not answer; PG is then the zero Status.
	InstanceDown bool
	// PG is what instance reports.
	PG instance.Status
}

// plan returns the one step a pass takes.
func plan(o observed) step {
	if o.Lead {
		return planLeader(o)
	}
	return planFollower(o)
}

func planLeader(o observed) step {
	pg := o.PG
	serving := pg.Running && !pg.InRecovery
	switch {
	case o.DeadlinePassed && serving:
		return stepFence
	case o.DeadlinePassed:
		return stepAwaitRenewal
	case pg.Data == string(instance.DataEmpty) && o.Epoch != o.FirstEpoch:
		return stepRefuseInitdb
	case pg.Data == string(instance.DataEmpty) && o.Restore:
		return stepRestore
	case pg.Data == string(instance.DataEmpty):
		return stepInitdb
	case pg.Running && !pg.Accepting && o.StartTimedOut:
		return stepAbandonStart
	case serving && o.HandOverTo != "" && o.HandOverTo != o.Self:
		return stepHandOver
	case !pg.Running && pg.Fenced == "" && !o.WasFenced && o.LedThisEpoch:
		// (Also when instance itself restarted, its container killed:
		// this agent ran PostgreSQL as the leader of this epoch, and it
		// is gone.) Nothing can be acknowledged any more: no postmaster.
		return stepRelease
	case o.InstanceDown && o.StartTimedOut:
		return stepRelease
	case o.InstanceDown:
		return stepAwaitInstance
	case !pg.Running:
		return stepStartLeader
	case pg.InRecovery:
		return stepPromote
	}
	return stepServe
}

func planFollower(o observed) step {
	pg := o.PG
	switch {
	case o.InstanceDown:
		return stepAwaitInstance
	// A PostgreSQL not answering yet is not taken for a leader when it was
	// started as a follower: a follower's start (a rewound one fetching
	// WAL through restore_command) can outlast a pass, and stopping it
	// then restarted it from scratch every pass, for minutes on a busy node.
	case pg.Running && !pg.InRecovery && (pg.Accepting || pg.Role != instance.RoleFollower):
		return stepDemote
	case o.Holder == "" || o.Holder == o.Self:
		return stepAwaitLeader
	case pg.Data == string(instance.DataEmpty):
		return stepClone
	case !pg.Running && (pg.ClusterState == "in production" || pg.ClusterState == "shut down"):
		return stepRewind
	case !pg.Running:
		return stepStartFollower
	}
	return stepFollow
}
