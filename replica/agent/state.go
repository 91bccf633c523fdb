package agent

import (
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// leadershipState is what the agent's runnables share: the pass (which
// alone decides), the lease and contact keepers, the commit gate, the
// relays, the WAL server and the HTTP API. One mutex guards it; the
// predicates below are the rules the runnables apply to it.
type leadershipState struct {
	mu sync.Mutex
	// What the agent last saw and decided.
	lease       *coordinationv1.Lease
	pod         *corev1.Pod
	mode        api.Mode
	epoch       int64
	deadline    time.Time // a leader's: writes stop at it
	lastRenew   time.Time
	lastContact time.Time
	// passBusy: a pass is running (maybe a long step: a base backup, a
	// rewind), so keepContact reads the Lease in its place.
	passBusy bool
	fenced   bool
	reason   string
	// startFailure: why the last start of PostgreSQL failed ("" once one
	// succeeds), for the operator's status and event.
	startFailure string
	// backupRefused is the last backup instance would not start.
	backupRefused *api.BackupProgress
	// reclones counts the times this agent cloned the leader again, and
	// lastReclone says why it last did.
	reclones    int64
	lastReclone string
	// sealedEpoch and sealedLSN: the epoch this follower sealed, and the
	// last position it received under it.
	sealedEpoch int64
	sealedLSN   lsn.LSN
	// rolesDone: this agent made sure, as leader, that the replication and
	// application roles and database exist.
	rolesDone bool
	pgStatus  instance.Status
	// streamedAt is the last pass that saw this follower's PostgreSQL
	// streaming (zero: never since the agent started), for /readyz's
	// grace between leaders.
	streamedAt time.Time
	// silentSince: since when PostgreSQL has run without answering, or
	// instance has not answered (zero while PostgreSQL answers or instance
	// says it does not run).
	silentSince time.Time
	// instanceDown: instance did not answer the last pass.
	instanceDown bool
	// gate is the commit gate's state (gate.go).
	gate gateState
	// ledEpoch is the epoch in which this agent last ran PostgreSQL as
	// the leader: a PostgreSQL that died then releases the Lease; one that
	// died in an earlier epoch (a leader elected again) is started.
	ledEpoch int64
	// history is what the pass has seen of the Lease's epochs and holders.
	history leaseHistory
	// revokedEpoch is the highest epoch this agent saw revoked or sealed
	// on any Lease it read: it never confirms a failsafe of it, whatever
	// older Lease a slow read returns later (failsafe.go).
	revokedEpoch int64
	// lastConfirmed is when this agent last confirmed a leader's
	// failsafe, or started (it cannot know what a former run of it
	// confirmed); confirmedAt only the confirmation (zero: none).
	lastConfirmed, confirmedAt time.Time
	// failsafe: the leader's deadline comes from its members'
	// confirmations, not from a renewal.
	failsafe bool
}

// storeLease records a Lease read or written; callers hold mu.
func (s *leadershipState) storeLease(l *coordinationv1.Lease) {
	s.lease = l
	p := leadership.Of(l)
	if p.Ending() {
		s.revokedEpoch = max(s.revokedEpoch, p.Epoch)
	}
}

// mayAck is the leader's one safety predicate: it may let a commit of epoch
// be acknowledged, or WAL of epoch leave, only while it leads that epoch,
// has not fenced itself, and now is before the renew deadline of its last
// renewal (the watchdog's deadline). The commit gate and the leader's end
// of every relay ask it, per acknowledgement and per chunk.
func (s *leadershipState) mayAck(epoch int64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode == api.ModeLeader && s.epoch == epoch && !s.fenced && now.Before(s.deadline)
}

// mayFollow is the follower's: it may still take WAL of epoch only while it
// follows that epoch, the Lease it last read is still at that epoch and
// unsealed, and it heard from the API server within the renew deadline
// (keepContact keeps reading during a long pass) or confirmed the
// leader's failsafe within its validity (the API server is gone for the
// leader too, and this follower is part of what lets it write).
func (s *leadershipState) mayFollow(epoch int64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != epoch || epoch == 0 || s.lease == nil {
		return false
	}
	p := leadership.Of(s.lease)
	return p.Epoch == epoch && p.SealedEpoch < epoch && s.inContact(now)
}

// inContact: the follower reached the API server within the renew
// deadline, or confirmed the leader's failsafe within its validity;
// callers hold mu.
func (s *leadershipState) inContact(now time.Time) bool {
	return now.Sub(s.lastContact) <= renewDeadline(s.lease) ||
		(!s.confirmedAt.IsZero() && now.Sub(s.confirmedAt) <= failsafeTTL)
}

func (s *leadershipState) ledEpochIs(epoch int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ledEpoch == epoch
}

func (s *leadershipState) setLedEpoch(epoch int64) {
	s.mu.Lock()
	s.ledEpoch = epoch
	s.mu.Unlock()
}

// currentDeadline is the leader's write deadline from the latest renewal:
// keepLease renews during a long step, so a deadline read before it is
// stale by the time PostgreSQL starts.
func (s *leadershipState) currentDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline
}

func (s *leadershipState) setReason(r string) {
	s.mu.Lock()
	s.reason = r
	s.mu.Unlock()
}

func (s *leadershipState) setGate(g gateState) {
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
}

// stillEpoch says whether the agent still sees epoch as the Lease's.
func (s *leadershipState) stillEpoch(epoch int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch == epoch
}
