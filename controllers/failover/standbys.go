package failover

import (
	"slices"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
)

// StandbysInput is what the synchronous-standby policy depends on.
type StandbysInput struct {
	// Sync is Sync mode; SyncReplicas its k; Preferred says
	// dataDurability is Preferred.
	Sync         bool
	SyncReplicas int
	Preferred    bool
	// Grace is how long a follower must have been seen unable to confirm
	// commits before a Preferred quorum leaves it out (the lease duration).
	Grace time.Duration
	// MaxLagBytes is how far behind the leader a follower may be and still
	// join a quorum that does not name it yet.
	MaxLagBytes int64
	// Leader leads; Pods are the pods the spec asks for, the leader among
	// them.
	Leader string
	Pods   []string
	// Current are the standbys in force on the Lease.
	Current leadership.Standbys
	// Standing are the followers able to confirm commits now (streaming
	// in this epoch, or ready); UnstandingSince says since when, by the
	// operator's clock, each other one has been seen unable.
	Standing        map[string]bool
	UnstandingSince map[string]time.Time
	// LeaderLSN is the leader's position; Positions each follower's (the
	// larger of received and replayed: the received position goes back
	// to the start of its segment when the WAL receiver restarts). 0 is
	// unknown.
	LeaderLSN lsn.LSN
	Positions map[string]lsn.LSN
	Now       time.Time
}

// SyncStandbys is what the leader's commits wait for: its own commit gate
// in Async mode (it acknowledges only while the lease is valid), else ANY k
// of the other pods the spec asks for. With dataDurability Preferred,
// followers seen unable to confirm commits for longer than the grace leave
// the quorum when fewer than k are left standing (down to the gate alone
// with none); a follower the quorum in force does not name joins only once
// caught up, so that it never holds commits while it catches up. Recheck,
// when not zero, is when a follower's grace ends and the answer may change.
func SyncStandbys(in StandbysInput) (standbys leadership.Standbys, recheck time.Duration) {
	if !in.Sync {
		return leadership.Gate(), 0
	}
	var followers []string
	for _, pod := range in.Pods {
		if pod != in.Leader {
			followers = append(followers, pod)
		}
	}
	k := in.SyncReplicas
	if in.Preferred {
		var standing []string
		for _, f := range followers {
			lost, until := in.lost(f)
			// A follower the quorum in force names leaves it only when
			// lost; one it does not name joins only once caught up.
			if !lost && (slices.Contains(in.Current.Names(), f) || !in.catchingUp(f)) {
				standing = append(standing, f)
			}
			if until > 0 && (recheck == 0 || until < recheck) {
				recheck = until
			}
		}
		switch {
		case len(standing) == 0:
			return leadership.Gate(), recheck
		case len(standing) < k:
			return leadership.AnyOf(len(standing), standing), recheck
		}
	}
	return leadership.AnyOf(min(k, len(followers)), followers), recheck
}

// lost says whether follower has been seen unable to confirm commits for
// the whole grace; until, when it is not lost yet but not standing, says
// when it would be. A follower with no time recorded is given its whole
// grace from now.
func (in StandbysInput) lost(follower string) (lost bool, until time.Duration) {
	if in.Standing[follower] {
		return false, 0
	}
	since, seen := in.UnstandingSince[follower]
	if !seen {
		return false, in.Grace
	}
	if left := since.Add(in.Grace).Sub(in.Now); left > 0 {
		return false, left
	}
	return true, 0
}

// catchingUp says whether follower is further behind the leader than
// MaxLagBytes (a follower back from an outage, say).
func (in StandbysInput) catchingUp(follower string) bool {
	at := in.Positions[follower]
	return at != 0 && in.LeaderLSN != 0 && in.LeaderLSN.Sub(at) > uint64(max(in.MaxLagBytes, 0))
}

// Lowered says whether s asks fewer followers to confirm each commit than
// a Sync cluster of pods pods with k synchronous replicas promises.
func Lowered(s leadership.Standbys, k, pods int) bool {
	return s.Kind != leadership.Quorum || s.K < min(k, pods-1)
}
