// Package failover is the operator's failover decision (docs/failover.md, docs/protocol.md) as a
// pure function: from the members observed, the Lease, the spec and the
// operator's clock to one action. It performs nothing; the reconciler
// carries the action out, one idempotent step per pass.
//
// The protocol has two phases. When the leader is lost (Lease released,
// expired by the operator's own clock, or both its containers reported
// terminated by its node), the operator first seals the epoch; the
// followers' agents then stop taking WAL of it and report the position
// they hold. Only then does it elect, among sealed followers, the one with
// the most WAL. In Sync mode with ANY k of n followers it elects only when
// at least n-k+1 followers reported (that set meets every acknowledgement
// quorum, so its best position holds every acknowledged commit) and only a
// follower at the best reported position may win.
package failover

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// Kind is what the operator should do.
type Kind string

const (
	// None means the leader is healthy; nothing to do.
	None Kind = "None"
	// Wait means a failover is due or under way but cannot proceed yet.
	Wait Kind = "Wait"
	// Revoke means mark the current epoch revoked on the Lease: the first
	// step when the leader may be writing on its failsafe (its followers
	// stop confirming it; the seal follows once none can be left).
	Revoke Kind = "Revoke"
	// Seal means mark the current epoch sealed on the Lease (phase one).
	Seal Kind = "Seal"
	// Promote means move the Lease to Target at the next epoch (phase two).
	Promote Kind = "Promote"
	// Refuse means the operator must not act; a person has to look.
	Refuse Kind = "Refuse"
)

// Spec is what the ReplicaSet's spec says about failover.
type Spec struct {
	Enabled bool
	// Sync is true in Sync mode, where SyncReplicas (k) of the Followers
	// (n) acknowledge every commit.
	Sync         bool
	SyncReplicas int
	Followers    int
	// MaxLagBytes is Async mode's data-loss budget.
	MaxLagBytes int64
	// Delay is spec.failover.delaySeconds.
	Delay time.Duration
	// LeaseDuration is the Lease's duration.
	LeaseDuration time.Duration
	// SealWait is how long after sealing the operator waits for every
	// follower to report before it elects among those that did.
	SealWait time.Duration
}

// FailsafeTTL is how long a member's confirmation keeps the leader's
// failsafe (the agent's failsafeTTL, G in docs/protocol.md).
const FailsafeTTL = 2 * time.Second

// Lease is what the operator knows of the leadership Lease.
type Lease struct {
	// Holder is "" once the leader released it; FormerHolder is who held
	// the epoch (the holder, or the pod that released it).
	Holder, FormerHolder string
	Epoch                int64
	// EverRenewed is false for a new cluster whose first leader never
	// renewed: it never served, so there is nothing to fail over.
	EverRenewed bool
	// LastRenewSeen is when, by the operator's clock, it last saw the
	// Lease renewed (or first saw it at all, after an operator restart).
	LastRenewSeen time.Time
	// Sealed says the current epoch is sealed; SealedAt when (operator's
	// clock, recorded on the Lease).
	Sealed   bool
	SealedAt time.Time
	// ReleasedLSN is the old leader's final position when it released the
	// Lease after a clean stop; 0 if unknown.
	ReleasedLSN lsn.LSN
	// Revoked says the current epoch is revoked; FailsafeReplicas is the
	// member count whose confirmations the leader's failsafe needs, as its
	// last renewal published it (0: it uses none).
	Revoked          bool
	FailsafeReplicas int32
}

// Member is one pod of the cluster as observed.
type Member struct {
	Name    string
	Ordinal int
	// Deleting: the pod has a deletion timestamp.
	Deleting bool
	Ready    bool
	// ContainersTerminated: the node reports both the postgres and the
	// agent containers terminated.
	ContainersTerminated bool
	// Agent is the agent's /status; nil when it did not answer.
	Agent *api.Status
	// APIContact is when the agent last reached the API server, on the
	// operator's clock: when the operator asked for its status, less the
	// age the agent reported (zero: unknown). The agent's clock is never
	// compared with the operator's.
	APIContact time.Time
	// FailsafeClear is, once the member reported the epoch revoked (or its
	// node reported its containers terminated), when its last
	// confirmation of the leader's failsafe expires at the latest, on the
	// operator's clock (zero: not reported).
	FailsafeClear time.Time
}

// reachedAPIServer says whether m's agent reached the API server within
// the renew deadline (2/3 of the lease) before now.
func (m Member) reachedAPIServer(in Input) bool {
	return !m.APIContact.IsZero() && in.Now.Sub(m.APIContact) <= in.Spec.LeaseDuration*2/3
}

// Input is everything the decision depends on.
type Input struct {
	Spec    Spec
	Lease   Lease
	Members []Member
	Now     time.Time
	// LostSince is when the operator first saw the leader lost by release
	// or termination (zero: now).
	LostSince time.Time
	// LeaderLSN is the leader's last known position (0 if unknown).
	LeaderLSN lsn.LSN
	// SystemIdentifier is the cluster's database system identifier as the
	// Lease records it ("" before a leader recorded it).
	SystemIdentifier string
	// SwitchoverTo names the pod a person asked to hand leadership to.
	SwitchoverTo string
	// ForcePromote names the pod a person asked to promote, accepting the
	// loss of acknowledged writes, if the leader is lost.
	ForcePromote string
	// Quorums are the Sync-mode rules in force during the epoch (the
	// current one, and the ones it replaced while they may still matter),
	// each ANY K of Members. Empty: ANY SyncReplicas of all Followers,
	// from the spec.
	Quorums []leadership.Standbys
}

// Decision is the action, with what a user needs to know about it.
type Decision struct {
	Kind Kind
	// Reason says why, in words a user can act on.
	Reason string
	// Until is when to look again at the latest (zero: on the next event).
	Until time.Time
	// Cause says why the leader counts as lost (empty while healthy).
	Cause string
	// Target and TargetLSN: the winner of a promotion and its position.
	Target    string
	TargetLSN lsn.LSN
	// Eligibility maps each member to "" (may be promoted) or why not.
	Eligibility map[string]string
	// Forced says the promotion is a person's, against the election's
	// rules (Input.ForcePromote).
	Forced bool
}

// Decide returns the one action the operator should take now.
func Decide(in Input) Decision {
	d := Decision{Eligibility: map[string]string{}}
	if claims := claimants(in.Members); len(claims) > 1 {
		d.Kind, d.Reason = Refuse, fmt.Sprintf("%s all run as leader: refusing to change leadership until only one does",
			strings.Join(claims, ", "))
		return d
	}
	lost, cause, lostAt, expiry := leaderLost(in)
	// Expired (or revoked by an earlier pass, maybe an earlier operator's):
	// the leader may still be writing on its failsafe.
	expired := lost && in.Lease.Holder != "" && !holderTerminated(in)
	if in.Lease.Revoked && !lost {
		lost, expired, cause, lostAt = true, true, fmt.Sprintf("epoch %d was revoked", in.Lease.Epoch), in.Now
	}
	if !lost && !in.Lease.Sealed {
		d.Kind, d.Until = None, expiry
		if !in.Lease.EverRenewed {
			d.Reason = "the first leader has not started yet"
		}
		return d
	}
	d.Cause = cause
	// A switchover's clean handover: the old leader stopped and released
	// with its final position, so no WAL of its epoch can appear any more;
	// the target takes over as soon as it has replayed that position
	// (replay never goes back, unlike the received position).
	if in.SwitchoverTo != "" && in.Lease.Holder == "" && in.Lease.ReleasedLSN != 0 && !in.Lease.Sealed {
		if m := member(in.Members, in.SwitchoverTo); m != nil && m.Agent != nil && !m.Deleting &&
			m.Agent.Running && m.Agent.InRecovery {
			if replayed := m.Agent.ReplayedLSN; replayed >= in.Lease.ReleasedLSN {
				d.Kind, d.Target, d.TargetLSN = Promote, m.Name, replayed
				d.Eligibility[m.Name] = ""
				d.Reason = fmt.Sprintf("switchover: %s replayed the old leader's final position (%s)", m.Name, in.Lease.ReleasedLSN)
				return d
			}
			// It streamed the old leader's last WAL as it stopped and
			// replays it in moments: a seal round would cost more.
			if lostAt := lostSince(in); in.Now.Before(lostAt.Add(SwitchoverGrace)) {
				d.Kind, d.Until = Wait, in.Now.Add(50*time.Millisecond)
				d.Reason = fmt.Sprintf("switchover: waiting for %s to replay the old leader's final position (%s)",
					m.Name, in.Lease.ReleasedLSN)
				return d
			}
		}
	}
	if !in.Lease.Sealed {
		switch {
		case in.ForcePromote != "":
			d.Kind, d.Reason = Seal, fmt.Sprintf("the leader is lost (%s): sealing epoch %d to promote %s as a person asked",
				cause, in.Lease.Epoch, in.ForcePromote)
		case !in.Spec.Enabled && in.SwitchoverTo == "":
			d.Kind, d.Reason = Refuse, "the leader is lost ("+cause+") and failover is disabled (spec.failover.enabled=false)"
		case in.SwitchoverTo == "" && in.Now.Before(lostAt.Add(in.Spec.Delay)):
			d.Kind, d.Until = Wait, lostAt.Add(in.Spec.Delay)
			d.Reason = fmt.Sprintf("the leader is lost (%s); spec.failover.delaySeconds holds the failover until %s",
				cause, d.Until.UTC().Format(time.RFC3339))
		default:
			d.Kind, d.Reason = Seal, fmt.Sprintf("the leader is lost (%s): sealing epoch %d", cause, in.Lease.Epoch)
		}
		if d.Kind == Seal && expired && in.Lease.FailsafeReplicas > 0 {
			return endFailsafe(in, d)
		}
		return d
	}
	if d.Cause == "" {
		d.Cause = fmt.Sprintf("epoch %d is sealed", in.Lease.Epoch)
	}
	return elect(in, d)
}

func holderTerminated(in Input) bool {
	m := member(in.Members, in.Lease.Holder)
	return m != nil && m.ContainersTerminated
}

// endFailsafe is the way to the seal of an expired leader that may be
// writing on its failsafe (docs/protocol.md, rule 5b): revoke, then seal
// once a member the failsafe needs reported the revocation and its last
// confirmation expired. d is the seal the leader's loss calls for.
func endFailsafe(in Input, d Decision) Decision {
	var needed []Member
	for _, m := range in.Members {
		if m.Ordinal < int(in.Lease.FailsafeReplicas) && m.Name != in.Lease.Holder && m.Name != in.Lease.FormerHolder {
			needed = append(needed, m)
		}
	}
	if !in.Lease.Revoked {
		for _, m := range needed {
			if m.reachedAPIServer(in) {
				d.Kind = Revoke
				d.Reason = fmt.Sprintf("the leader is lost (%s) and may be writing on its failsafe: revoking epoch %d, then sealing it once no confirmation is left",
					d.Cause, in.Lease.Epoch)
				return d
			}
		}
		// Nobody would see a revocation: it could only force a failover
		// once the network heals.
		d.Kind, d.Until = Wait, in.Now.Add(time.Second)
		d.Reason = fmt.Sprintf("the leader is lost (%s) but may be writing on its failsafe, and no member it needs reaches the API server to see a revocation: waiting",
			d.Cause)
		return d
	}
	var lapse time.Time
	by := ""
	for _, m := range needed {
		if !m.FailsafeClear.IsZero() && (lapse.IsZero() || m.FailsafeClear.Before(lapse)) {
			lapse, by = m.FailsafeClear, m.Name
		}
	}
	switch {
	case lapse.IsZero():
		d.Kind, d.Until = Wait, in.Now.Add(time.Second)
		d.Reason = fmt.Sprintf("epoch %d is revoked: waiting for a member the leader's failsafe needs to report it", in.Lease.Epoch)
	case in.Now.Before(lapse):
		d.Kind, d.Until = Wait, lapse
		d.Reason = fmt.Sprintf("epoch %d is revoked: %s's last confirmation of the leader's failsafe expires at %s",
			in.Lease.Epoch, by, lapse.UTC().Format(time.RFC3339Nano))
	default:
		d.Reason = fmt.Sprintf("the leader is lost (%s); epoch %d is revoked and no confirmation of its failsafe is left (%s): sealing it",
			d.Cause, in.Lease.Epoch, by)
	}
	return d
}

// claimants are the members whose agents report PostgreSQL running as a
// leader: more than one is a split brain the operator must not touch.
func claimants(members []Member) []string {
	var out []string
	for _, m := range members {
		if a := m.Agent; a != nil && a.Mode == api.ModeLeader && a.Running && !a.InRecovery && !a.Fenced {
			out = append(out, m.Name)
		}
	}
	return out
}

// SwitchoverGrace is how long after a switchover's release the operator
// waits for the target to replay the old leader's final position before it
// falls back to sealing the epoch.
const SwitchoverGrace = 2 * time.Second

func lostSince(in Input) time.Time {
	if in.LostSince.IsZero() {
		return in.Now
	}
	return in.LostSince
}

// leaderLost says whether the leader is lost, why, since when, and
// otherwise when its Lease expires by the operator's clock.
func leaderLost(in Input) (lost bool, cause string, since, expiry time.Time) {
	l := in.Lease
	lostSince := in.LostSince
	if lostSince.IsZero() {
		lostSince = in.Now
	}
	if l.Holder == "" {
		cause = "the leader released the Lease"
		if l.ReleasedLSN != 0 {
			cause += " at " + l.ReleasedLSN.String()
		}
		return true, cause, lostSince, time.Time{}
	}
	if m := member(in.Members, l.Holder); m != nil && m.ContainersTerminated {
		return true, "the node reports the leader's postgres and agent containers terminated", lostSince, time.Time{}
	}
	if !l.EverRenewed {
		return false, "", time.Time{}, time.Time{}
	}
	expiry = l.LastRenewSeen.Add(in.Spec.LeaseDuration)
	if in.Now.Before(expiry) {
		return false, "", time.Time{}, expiry
	}
	return true, fmt.Sprintf("no renewal of the Lease seen for %s", in.Spec.LeaseDuration), expiry, time.Time{}
}

// candidate is a member that reported a sealed position.
type candidate struct {
	Member
	received, replayed lsn.LSN
}

func elect(in Input, d Decision) Decision {
	epoch := in.Lease.Epoch
	var reported []candidate
	maxTimeline := int64(0)
	followers := 0
	for _, m := range in.Members {
		if m.Name == in.Lease.FormerHolder {
			continue
		}
		followers++
		a := m.Agent
		if a == nil || !a.Sealed || a.Epoch != epoch {
			continue
		}
		if a.SealedLSN == 0 {
			continue
		}
		reported = append(reported, candidate{Member: m, received: a.SealedLSN, replayed: a.ReplayedLSN})
		maxTimeline = max(maxTimeline, a.Timeline)
	}
	slices.SortFunc(reported, func(x, y candidate) int {
		return cmp.Or(cmp.Compare(y.received, x.received), cmp.Compare(y.replayed, x.replayed), cmp.Compare(x.Ordinal, y.Ordinal))
	})
	leaderLSN := max(in.LeaderLSN, in.Lease.ReleasedLSN)
	eligible := func(c candidate) string {
		a := c.Agent
		switch {
		case c.Deleting:
			return "the pod is being deleted"
		case !a.Running || !a.InRecovery:
			return "PostgreSQL is not running as a follower"
		case !c.reachedAPIServer(in):
			return "its agent has not reached the API server recently"
		case foreignData(in, a):
			return fmt.Sprintf("its data is another database's (system identifier %s, the cluster's is %s)",
				a.SystemIdentifier, in.SystemIdentifier)
		case a.Timeline < maxTimeline:
			return fmt.Sprintf("on timeline %d, behind timeline %d", a.Timeline, maxTimeline)
		case !in.Spec.Sync && leaderLSN.Sub(c.received) > uint64(max(in.Spec.MaxLagBytes, 0)):
			return fmt.Sprintf("lags the leader's last known position by %d bytes, more than maxLagBytes (%d)",
				leaderLSN.Sub(c.received), in.Spec.MaxLagBytes)
		case diskFull(a):
			return fmt.Sprintf("its data volume is %d%% full: as leader it would stop on a full disk",
				a.DiskUsedBytes*100/a.DiskTotalBytes)
		}
		return ""
	}
	for _, m := range in.Members {
		if m.Name == in.Lease.FormerHolder {
			d.Eligibility[m.Name] = "the leader of the sealed epoch"
			continue
		}
		d.Eligibility[m.Name] = fmt.Sprintf("has not reported a sealed position for epoch %d", epoch)
	}
	for _, c := range reported {
		d.Eligibility[c.Name] = eligible(c)
	}
	if in.ForcePromote != "" {
		return forcePromote(in, d, reported)
	}

	// A switchover hands over to the follower a person named, once it
	// holds the old leader's final position; if it cannot within the seal
	// wait, the election below proceeds as for any lost leader.
	if in.SwitchoverTo != "" && in.Now.Before(in.Lease.SealedAt.Add(in.Spec.SealWait)) {
		for _, c := range reported {
			if c.Name != in.SwitchoverTo {
				continue
			}
			switch why := d.Eligibility[c.Name]; {
			case why != "":
				d.Reason = fmt.Sprintf("switchover: %s cannot be promoted: %s", c.Name, why)
			case c.received < leaderLSN:
				d.Reason = fmt.Sprintf("switchover: %s has %s, the old leader stopped at %s", c.Name,
					c.received, leaderLSN)
			default:
				d.Kind, d.Target, d.TargetLSN = Promote, c.Name, c.received
				d.Reason = fmt.Sprintf("switchover: %s holds the old leader's final position (%s)", c.Name, leaderLSN)
				return d
			}
		}
		if d.Reason == "" {
			d.Reason = fmt.Sprintf("switchover: waiting for %s to report a sealed position", in.SwitchoverTo)
		}
		d.Kind, d.Until = Wait, in.Lease.SealedAt.Add(in.Spec.SealWait)
		return d
	}

	// Give every follower a chance to report before electing among those
	// that did.
	if len(reported) < followers && in.Now.Before(in.Lease.SealedAt.Add(in.Spec.SealWait)) {
		d.Kind, d.Until = Wait, in.Lease.SealedAt.Add(in.Spec.SealWait)
		d.Reason = fmt.Sprintf("epoch %d sealed; %d of %d followers reported their positions", epoch, len(reported), followers)
		return d
	}

	if in.Spec.Sync {
		if why := quorumsUnmet(in, reported); why != "" {
			return fallback(in, d, why)
		}
		// Any follower at the highest reported position holds every
		// acknowledged commit: the first eligible one of them wins.
		best := reported[0]
		var why []string
		for _, c := range reported {
			if c.received != best.received {
				break
			}
			if d.Eligibility[c.Name] == "" {
				return promote(in, d, c)
			}
			why = append(why, fmt.Sprintf("%s: %s", c.Name, d.Eligibility[c.Name]))
		}
		return fallback(in, d, fmt.Sprintf("Sync mode: no follower at the highest reported position (%s) can be promoted: %s",
			best.received, strings.Join(why, "; ")))
	}
	for _, c := range reported {
		if d.Eligibility[c.Name] == "" {
			return promote(in, d, c)
		}
	}
	return fallback(in, d, "no follower can be promoted")
}

// forcePromote is the escape hatch: the named follower wins as soon as it
// reported its sealed position (the seal keeps the old leader from
// acknowledging anything more, so there is still one leader), runs
// PostgreSQL as a follower and reaches the API server. Nothing else of the
// election's rules applies: the person accepted that acknowledged writes
// it lacks are lost, and the reason says how far behind the best report it
// is.
func forcePromote(in Input, d Decision, reported []candidate) Decision {
	name := in.ForcePromote
	for _, c := range reported {
		if c.Name != name {
			continue
		}
		a := c.Agent
		switch {
		case c.Deleting:
			d.Reason = fmt.Sprintf("forced promotion of %s waits: the pod is being deleted", name)
		case !a.Running || !a.InRecovery:
			d.Reason = fmt.Sprintf("forced promotion of %s waits: PostgreSQL is not running as a follower", name)
		case !c.reachedAPIServer(in):
			d.Reason = fmt.Sprintf("forced promotion of %s waits: its agent has not reached the API server recently", name)
		case foreignData(in, a):
			d.Reason = fmt.Sprintf("forced promotion of %s refused: its data is another database's (system identifier %s, the cluster's is %s)",
				name, a.SystemIdentifier, in.SystemIdentifier)
		default:
			refused := d.Eligibility[name]
			d.Kind, d.Target, d.TargetLSN, d.Forced = Promote, name, c.received, true
			d.Eligibility[name] = ""
			d.Reason = fmt.Sprintf("forced by a person (%s=%s, %s=true): %s has %s, the best reported position is %s",
				names.AnnotationPromote, name, names.AnnotationAcceptDataLoss, name, c.received, reported[0].received)
			if refused != "" {
				d.Reason += "; the election would have refused it: " + refused
			}
			return d
		}
		d.Kind, d.Until = Wait, in.Now.Add(time.Second)
		return d
	}
	d.Kind, d.Until = Wait, in.Now.Add(time.Second)
	d.Reason = fmt.Sprintf("forced promotion of %s waits for it to report a sealed position for epoch %d", name, in.Lease.Epoch)
	return d
}

// quorumsUnmet says why the reported followers may miss an acknowledged
// commit ("" when they cannot): for each rule ANY k of m followers that was
// in force, at least m - k + 1 of those m must have reported, so that the
// reported set meets every k of them that acknowledged a commit.
func quorumsUnmet(in Input, reported []candidate) string {
	quorums := in.Quorums
	if len(quorums) == 0 {
		var all []string
		for _, m := range in.Members {
			if m.Name != in.Lease.FormerHolder {
				all = append(all, m.Name)
			}
		}
		// Pods the spec counts that do not exist cannot report.
		for len(all) < in.Spec.Followers {
			all = append(all, fmt.Sprintf("(missing follower %d)", len(all)+1))
		}
		quorums = []leadership.Standbys{leadership.AnyOf(in.Spec.SyncReplicas, all)}
	}
	for _, q := range quorums {
		got := 0
		for _, c := range reported {
			if slices.Contains(q.Members, c.Name) {
				got++
			}
		}
		if need := len(q.Members) - min(q.K, len(q.Members)) + 1; got < need {
			return fmt.Sprintf("Sync mode: %d of the %d followers of ANY %d (%s) reported sealed positions, %d needed to be sure "+
				"the winner holds every acknowledged commit", got, len(q.Members), q.K, strings.Join(q.Members, ", "), need)
		}
	}
	return ""
}

func promote(_ Input, d Decision, c candidate) Decision {
	d.Kind, d.Target, d.TargetLSN = Promote, c.Name, c.received
	d.Reason = fmt.Sprintf("%s holds the most WAL among the sealed followers (%s)", c.Name, c.received)
	return d
}

// fallback: with no follower to promote, the leader of the sealed epoch
// may lead again at a new epoch when its agent answers and its PostgreSQL
// is not running as a leader: its data holds every commit it acknowledged
// (a single-pod cluster whose PostgreSQL crashed recovers this way).
func fallback(in Input, d Decision, why string) Decision {
	if old := member(in.Members, in.Lease.FormerHolder); old != nil && old.Agent != nil && !old.Deleting &&
		(!old.Agent.Running || old.Agent.InRecovery) && old.reachedAPIServer(in) && !foreignData(in, old.Agent) {
		d.Eligibility[old.Name] = ""
		d.Kind, d.Target, d.TargetLSN = Promote, old.Name, in.Lease.ReleasedLSN
		d.Reason = why + "; the old leader answers with its data and leads again at a new epoch"
		return d
	}
	d.Kind, d.Reason = Wait, why+"; waiting"
	return d
}

// foreignData: a's data is not this cluster's database (both identifiers
// known and different).
func foreignData(in Input, a *api.Status) bool {
	return in.SystemIdentifier != "" && a.SystemIdentifier != "" && a.SystemIdentifier != in.SystemIdentifier
}

func member(ms []Member, name string) *Member {
	for i := range ms {
		if ms[i].Name == name {
			return &ms[i]
		}
	}
	return nil
}

// DiskFullPercent is how full a follower's data volume may be and the
// follower still be promoted: a leader on a volume this full would soon
// stop on ENOSPC, taking writes down again.
const DiskFullPercent = 95

func diskFull(a *api.Status) bool {
	return a.DiskTotalBytes > 0 && a.DiskUsedBytes*100/a.DiskTotalBytes >= DiskFullPercent
}
