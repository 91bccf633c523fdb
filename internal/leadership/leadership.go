// Package leadership is the leadership protocol's state as the Lease carries
// it (docs/protocol.md), and the one codec between that state and the
// Lease: the operator and the agents both read and write the Lease through
// Decode and Encode, so that the two sides can never read a seal, a quorum
// or a release differently. Nothing else reads or writes the protocol's
// annotations.
package leadership

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
)

// State is what the Lease says of leadership.
type State struct {
	// Holder is the leader pod ("" once the Lease is released).
	Holder string
	// Epoch is the leadership term, the Lease's leaseTransitions (0: none).
	Epoch int64
	// SealedEpoch seals every epoch up to it (0: none sealed): a sealed
	// epoch's followers take no more of its WAL and it never serves again.
	SealedEpoch int64
	// SealedAt is when the operator sealed, by its clock (zero: unknown).
	SealedAt time.Time
	// Standbys are the synchronous standbys the leader must run with.
	Standbys Standbys
	// Previous are the values Standbys replaced in this epoch whose
	// acknowledgements may not yet be on every standby Standbys names:
	// the election honours them too.
	Previous []Standbys
	// PreviousUntil is the leader's position when it was seen running
	// Standbys (0: not seen yet); Previous is forgotten once every standby
	// Standbys names has received it.
	PreviousUntil lsn.LSN
	// ReleasedLSN is a released Lease's final position after a clean stop
	// (0: unknown, as after a crash); ReleasedBy the pod that released it.
	ReleasedLSN lsn.LSN
	ReleasedBy  string
	// SwitchoverTo is the pod the operator asked the leader to hand over
	// to ("" for none).
	SwitchoverTo string
	// LeaderPosition is the leader's WAL position as of its last renewal,
	// and the epoch of that renewal: see LeaderLSN.
	LeaderPosition Position
	// SystemIdentifier is the cluster's database system identifier (""
	// until a leader recorded it).
	SystemIdentifier string
	// Failsafe: the spec lets the leader write on its followers'
	// confirmations while it cannot reach the API server.
	Failsafe bool
	// FailsafeReplicas is the member count whose confirmations the leader
	// may be relying on (0: it relies on none), as its last renewal
	// published it.
	FailsafeReplicas int32
	// RevokedEpoch revokes every epoch up to it (0: none): followers stop
	// confirming its failsafe and nobody renews it; a seal follows.
	RevokedEpoch int64
	// FirstEpoch is the cluster's first epoch, the only one whose leader
	// may create the data (1 unless the Lease says otherwise; unreadable,
	// 0: no epoch may).
	FirstEpoch int64
}

// Position is a leader's WAL position as of a renewal in Epoch.
type Position struct {
	Epoch int64
	LSN   lsn.LSN
}

// LeaderLSN is the current epoch's leader's position as of its last
// renewal (0: it has not renewed with one).
func (s State) LeaderLSN() lsn.LSN {
	if s.LeaderPosition.Epoch != s.Epoch {
		return 0
	}
	return s.LeaderPosition.LSN
}

// RecordSystemIdentifier writes the cluster's system identifier onto the
// Lease a leader is about to renew, if none is recorded yet, and nothing
// else. It is never changed once recorded.
func RecordSystemIdentifier(l *coordinationv1.Lease, id string) {
	if id == "" || l.Annotations[names.AnnotationSystemIdentifier] != "" {
		return
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[names.AnnotationSystemIdentifier] = id
}

// SetLeaderPosition writes the leader's position onto the Lease it is
// about to renew, and nothing else: a renewal must not rewrite the rest of
// the protocol's state.
func SetLeaderPosition(l *coordinationv1.Lease, epoch int64, at lsn.LSN) {
	if at == 0 {
		return
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[names.AnnotationLeaderLSN] = Position{Epoch: epoch, LSN: at}.String()
}

func (p Position) String() string {
	if p.LSN == 0 {
		return ""
	}
	return strconv.FormatInt(p.Epoch, 10) + ":" + p.LSN.Text()
}

func parsePosition(v string) (Position, error) {
	if v == "" {
		return Position{}, nil
	}
	e, at, ok := strings.Cut(v, ":")
	epoch, err := strconv.ParseInt(e, 10, 64)
	if !ok || err != nil || epoch <= 0 {
		return Position{}, fmt.Errorf("%q is not <epoch>:<lsn>", v)
	}
	l, err := decodeLSN(at)
	if err != nil {
		return Position{}, err
	}
	return Position{Epoch: epoch, LSN: l}, nil
}

// Sealed says whether the current epoch is sealed.
func (s State) Sealed() bool { return s.Epoch > 0 && s.SealedEpoch >= s.Epoch }

// Ending says whether the current epoch is revoked or sealed: nobody
// renews it, and no follower confirms its failsafe.
func (s State) Ending() bool {
	return s.Epoch > 0 && max(s.SealedEpoch, s.RevokedEpoch) >= s.Epoch
}

// SetFailsafeReplicas writes the member count whose confirmations the
// leader's failsafe needs onto the Lease it is about to renew (0: none),
// and nothing else.
func SetFailsafeReplicas(l *coordinationv1.Lease, n int32) {
	if n <= 0 {
		delete(l.Annotations, names.AnnotationFailsafeReplicas)
		return
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[names.AnnotationFailsafeReplicas] = strconv.FormatInt(int64(n), 10)
}

// everySealed is the seal an unreadable annotation stands for: refusing to
// lead is always safe, leading in a sealed epoch never is.
const everySealed = math.MaxInt64

// Decode reads the protocol's state from a Lease. An annotation it cannot
// read is named in the error, and the State holds its safe reading: every
// epoch sealed for a seal; Standbys Unreadable (the leader keeps what it
// runs); no previous value, settle position, seal time, release position or leader position.
func Decode(l *coordinationv1.Lease) (State, error) {
	s := State{Holder: ptr.Deref(l.Spec.HolderIdentity, ""), Epoch: int64(ptr.Deref(l.Spec.LeaseTransitions, 0))}
	a := l.Annotations
	var errs []error
	unreadable := func(key string, err error) { errs = append(errs, fmt.Errorf("annotation %s: %w", key, err)) }
	// A seal or a revocation: "up to epoch n"; unreadable, every epoch.
	upTo := func(key string) int64 {
		v, ok := a[key]
		if !ok {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			unreadable(key, fmt.Errorf("%q is not an epoch", v))
			n = everySealed
		}
		return n
	}
	s.SealedEpoch, s.RevokedEpoch = upTo(names.AnnotationSealedEpoch), upTo(names.AnnotationRevokedEpoch)
	s.FirstEpoch = 1
	if v, ok := a[names.AnnotationFirstEpoch]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			unreadable(names.AnnotationFirstEpoch, fmt.Errorf("%q is not an epoch", v))
			n = 0
		}
		s.FirstEpoch = n
	}
	if v, ok := a[names.AnnotationFailsafeReplicas]; ok {
		// Unreadable: the leader may rely on any member, so the operator
		// waits for a revocation report (its largest reading).
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			unreadable(names.AnnotationFailsafeReplicas, fmt.Errorf("%q is not a member count", v))
			n = names.MaxReplicas
		}
		s.FailsafeReplicas = int32(n)
	}
	// Anything but "true" is off: a leader never relies on a failsafe the
	// operator did not turn on.
	s.Failsafe = a[names.AnnotationFailsafe] == "true"
	if v := a[names.AnnotationSealedAt]; v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			unreadable(names.AnnotationSealedAt, err)
		}
		s.SealedAt = t
	}
	var err error
	if s.Standbys, err = ParseStandbys(a[names.AnnotationSyncStandbys]); err != nil {
		unreadable(names.AnnotationSyncStandbys, err)
		s.Standbys = Standbys{Kind: Unreadable}
	}
	if v := a[names.AnnotationSyncStandbysPrevious]; v != "" {
		for _, p := range strings.Split(v, ";") {
			q, err := ParseStandbys(p)
			if err != nil || q.Kind != Quorum {
				unreadable(names.AnnotationSyncStandbysPrevious, fmt.Errorf("%q is not a quorum", p))
				continue
			}
			s.Previous = append(s.Previous, q)
		}
	}
	if s.PreviousUntil, err = decodeLSN(a[names.AnnotationSyncStandbysPreviousUntil]); err != nil {
		unreadable(names.AnnotationSyncStandbysPreviousUntil, err)
	}
	if s.ReleasedLSN, err = decodeLSN(a[names.AnnotationReleasedLSN]); err != nil {
		unreadable(names.AnnotationReleasedLSN, err)
	}
	s.ReleasedBy = a[names.AnnotationReleasedBy]
	s.SwitchoverTo = a[names.AnnotationHandoverTo]
	s.SystemIdentifier = a[names.AnnotationSystemIdentifier]
	if s.LeaderPosition, err = parsePosition(a[names.AnnotationLeaderLSN]); err != nil {
		unreadable(names.AnnotationLeaderLSN, err)
	}
	return s, errors.Join(errs...)
}

// Of is the Lease's state in its safe reading, for readers that act on it
// the same whether an annotation was unreadable or not (see Decode).
func Of(l *coordinationv1.Lease) State {
	s, _ := Decode(l)
	return s
}

func decodeLSN(v string) (lsn.LSN, error) {
	var l lsn.LSN
	err := l.UnmarshalText([]byte(v))
	return l, err
}

// Encode writes s onto the Lease l (its holder, epoch and the protocol's
// annotations; other fields and annotations stay). Zero fields are left
// out. Unreadable standbys leave the annotation as it is.
func Encode(s State, l *coordinationv1.Lease) {
	l.Spec.HolderIdentity = nil
	if s.Holder != "" {
		l.Spec.HolderIdentity = ptr.To(s.Holder)
	}
	l.Spec.LeaseTransitions = nil
	if s.Epoch > 0 {
		l.Spec.LeaseTransitions = ptr.To(int32(min(s.Epoch, math.MaxInt32)))
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	set := func(key, v string) {
		if v == "" {
			delete(l.Annotations, key)
			return
		}
		l.Annotations[key] = v
	}
	set(names.AnnotationSealedEpoch, "")
	if s.SealedEpoch > 0 {
		set(names.AnnotationSealedEpoch, strconv.FormatInt(s.SealedEpoch, 10))
	}
	set(names.AnnotationSealedAt, "")
	if !s.SealedAt.IsZero() {
		set(names.AnnotationSealedAt, s.SealedAt.UTC().Format(time.RFC3339Nano))
	}
	if s.Standbys.Kind != Unreadable {
		set(names.AnnotationSyncStandbys, s.Standbys.String())
	}
	previous := make([]string, 0, len(s.Previous))
	for _, p := range s.Previous {
		previous = append(previous, p.String())
	}
	set(names.AnnotationSyncStandbysPrevious, strings.Join(previous, ";"))
	set(names.AnnotationSyncStandbysPreviousUntil, encodeLSN(s.PreviousUntil))
	set(names.AnnotationReleasedLSN, encodeLSN(s.ReleasedLSN))
	set(names.AnnotationReleasedBy, s.ReleasedBy)
	set(names.AnnotationHandoverTo, s.SwitchoverTo)
	set(names.AnnotationLeaderLSN, s.LeaderPosition.String())
	set(names.AnnotationSystemIdentifier, s.SystemIdentifier)
	set(names.AnnotationRevokedEpoch, "")
	if s.RevokedEpoch > 0 {
		set(names.AnnotationRevokedEpoch, strconv.FormatInt(s.RevokedEpoch, 10))
	}
	set(names.AnnotationFailsafe, "")
	if s.Failsafe {
		set(names.AnnotationFailsafe, "true")
	}
	set(names.AnnotationFirstEpoch, "")
	if s.FirstEpoch > 1 {
		set(names.AnnotationFirstEpoch, strconv.FormatInt(s.FirstEpoch, 10))
	}
	set(names.AnnotationFailsafeReplicas, "")
	if s.FailsafeReplicas > 0 {
		set(names.AnnotationFailsafeReplicas, strconv.FormatInt(int64(s.FailsafeReplicas), 10))
	}
}

func encodeLSN(l lsn.LSN) string { return l.Text() }
