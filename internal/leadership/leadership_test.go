package leadership

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
)

// randomState is a state the operator or an agent may write: any holder,
// epoch, seal, standbys, previous quorums, positions and target.
func randomState(r *rand.Rand) State {
	pods := []string{"db-0", "db-1", "db-2", "pg-main-3", "x-8"}
	pick := func() string { return pods[r.IntN(len(pods))] }
	maybe := func(v string) string {
		if r.IntN(2) == 0 {
			return ""
		}
		return v
	}
	quorum := func() Standbys {
		members := pods[:1+r.IntN(len(pods))]
		return AnyOf(1+r.IntN(len(members)), members)
	}
	s := State{Holder: maybe(pick()), Epoch: r.Int64N(1 << 31), ReleasedBy: maybe(pick()), SwitchoverTo: maybe(pick())}
	if r.IntN(2) == 0 {
		s.SealedEpoch = 1 + r.Int64N(1<<40)
		s.SealedAt = time.Unix(0, r.Int64N(1<<62)).UTC()
	}
	switch r.IntN(3) {
	case 0:
		s.Standbys = Gate()
	case 1:
		s.Standbys = quorum()
	}
	for range r.IntN(3) {
		s.Previous = append(s.Previous, quorum())
	}
	if r.IntN(2) == 0 {
		s.PreviousUntil = lsn.LSN(1 + r.Uint64())
	}
	if r.IntN(2) == 0 {
		s.ReleasedLSN = lsn.LSN(1 + r.Uint64())
	}
	if r.IntN(2) == 0 {
		s.LeaderPosition = Position{Epoch: 1 + r.Int64N(1<<31), LSN: lsn.LSN(1 + r.Uint64())}
	}
	s.Failsafe = r.IntN(2) == 0
	if r.IntN(2) == 0 {
		s.FailsafeReplicas = 1 + r.Int32N(names.MaxReplicas)
	}
	if r.IntN(2) == 0 {
		s.RevokedEpoch = 1 + r.Int64N(1<<40)
	}
	s.FirstEpoch = 1
	if r.IntN(2) == 0 {
		s.FirstEpoch = 1 + r.Int64N(1<<20)
	}
	return s
}

// The first epoch is 1 unless the Lease names another; one that cannot be
// read lets no epoch create data.
func TestTheFirstEpochReadsSafely(t *testing.T) {
	l := &coordinationv1.Lease{}
	if got := Of(l).FirstEpoch; got != 1 {
		t.Errorf("no annotation: first epoch %d, want 1", got)
	}
	Encode(State{Epoch: 5, FirstEpoch: 5}, l)
	if got := Of(l).FirstEpoch; got != 5 {
		t.Errorf("first epoch %d, want 5", got)
	}
	l.Annotations[names.AnnotationFirstEpoch] = "five"
	s, err := Decode(l)
	if err == nil || s.FirstEpoch != 0 {
		t.Errorf("unreadable first epoch: %d, %v; want 0 and an error", s.FirstEpoch, err)
	}
}

// The revocation reads alike on both sides, and what cannot be read is
// read the safe way: an unreadable revocation revokes every epoch, an
// unreadable member count makes the operator wait for any member, and a
// failsafe flag that is not exactly "true" is off.
func TestTheFailsafeReadsTheSafeWay(t *testing.T) {
	l := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To(int32(4))}}
	Encode(State{Epoch: 4, RevokedEpoch: 3, Failsafe: true, FailsafeReplicas: 3}, l)
	if s := Of(l); s.Ending() || !s.Failsafe || s.FailsafeReplicas != 3 {
		t.Errorf("epoch 4 with epoch 3 revoked: %+v", s)
	}
	l.Annotations[names.AnnotationRevokedEpoch] = "4"
	if !Of(l).Ending() || Of(l).Sealed() {
		t.Errorf("a revoked epoch is ending, not sealed: %+v", Of(l))
	}
	l.Annotations[names.AnnotationRevokedEpoch] = "four"
	l.Annotations[names.AnnotationFailsafeReplicas] = "-2"
	l.Annotations[names.AnnotationFailsafe] = "yes"
	s, err := Decode(l)
	if err == nil || !s.Ending() || s.FailsafeReplicas != names.MaxReplicas || s.Failsafe {
		t.Errorf("unreadable failsafe annotations read as %+v, %v", s, err)
	}
	SetFailsafeReplicas(l, 0)
	if _, ok := l.Annotations[names.AnnotationFailsafeReplicas]; ok {
		t.Errorf("SetFailsafeReplicas(0) left the annotation")
	}
}

// A leader's renewal writes its position for its epoch, and nothing else;
// a position of another epoch is no position of the current leader.
func TestTheLeaderPositionIsTheCurrentEpochs(t *testing.T) {
	l := &coordinationv1.Lease{}
	Encode(State{Holder: "db-0", Epoch: 4, SealedEpoch: 3, ReleasedLSN: 0x100}, l)
	before := len(l.Annotations)
	SetLeaderPosition(l, 4, 0x5000000)
	if len(l.Annotations) != before+1 {
		t.Errorf("SetLeaderPosition changed more than its annotation: %v", l.Annotations)
	}
	s, err := Decode(l)
	if err != nil || s.LeaderLSN() != 0x5000000 || s.ReleasedLSN != 0x100 || s.SealedEpoch != 3 {
		t.Errorf("decoded %+v, %v", s, err)
	}
	s.Holder, s.Epoch = "db-1", 5 // a promotion carries the old annotation over
	Encode(s, l)
	if got := Of(l).LeaderLSN(); got != 0 {
		t.Errorf("epoch 5's leader position read as %s: it was epoch 4's", got)
	}
	l.Annotations[names.AnnotationLeaderLSN] = "five:0/1"
	if _, err := Decode(l); err == nil || !strings.Contains(err.Error(), names.AnnotationLeaderLSN) {
		t.Errorf("an unreadable position: %v", err)
	}
}

// Whatever one side writes, the other reads back exactly, with no error,
// whatever else the Lease carried before.
func TestEveryStateSurvivesTheLease(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		want := randomState(r)
		before := randomState(r)
		l := &coordinationv1.Lease{}
		l.Annotations = map[string]string{"someone-else/note": "kept"}
		Encode(before, l)
		Encode(want, l)
		got, err := Decode(l)
		if err != nil {
			t.Fatalf("state %d: %+v decoded with %v (annotations %v)", i, want, err, l.Annotations)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("state %d: wrote %+v, read %+v (annotations %v)", i, want, got, l.Annotations)
		}
		if l.Annotations["someone-else/note"] != "kept" {
			t.Fatalf("state %d: Encode removed an annotation that is not the protocol's", i)
		}
		for k := range l.Annotations {
			if k != "someone-else/note" && !strings.HasPrefix(k, "regent.dev/") {
				t.Fatalf("state %d: Encode wrote %s", i, k)
			}
		}
	}
}

// The seal is the rule both sides must read alike: an epoch is sealed when
// the seal reaches it, and an unreadable seal seals every epoch.
func TestSealedReadsTheSameOnEverySide(t *testing.T) {
	for _, tc := range []struct {
		epoch  int32
		sealed *string
		want   bool
		err    bool
	}{
		{epoch: 4, want: false},
		{epoch: 4, sealed: ptr.To("3"), want: false},
		{epoch: 4, sealed: ptr.To("4"), want: true},
		{epoch: 4, sealed: ptr.To("5"), want: true},
		{epoch: 4, sealed: ptr.To(""), want: true, err: true},
		{epoch: 4, sealed: ptr.To("four"), want: true, err: true},
		{epoch: 4, sealed: ptr.To("-1"), want: true, err: true},
	} {
		l := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To(tc.epoch)}}
		if tc.sealed != nil {
			l.Annotations = map[string]string{names.AnnotationSealedEpoch: *tc.sealed}
		}
		s, err := Decode(l)
		if s.Sealed() != tc.want || (err != nil) != tc.err {
			t.Errorf("epoch %d, seal %v: sealed %v (error %v), want %v (error %v)",
				tc.epoch, ptr.Deref(tc.sealed, "<none>"), s.Sealed(), err, tc.want, tc.err)
		}
	}
}

// The values PostgreSQL runs with are exactly those the operator writes;
// anything else is refused, and the leader keeps what it runs.
func TestStandbysAreWhatPostgresRuns(t *testing.T) {
	for _, tc := range []struct {
		s    Standbys
		want string
	}{
		{Standbys{}, ""},
		{Gate(), "FIRST 1 (regent_gate)"},
		{AnyOf(2, []string{"db-1", "db-2"}), `ANY 2 ("db_1", "db_2")`},
		{AnyOf(1, []string{"pg-main-0"}), `ANY 1 ("pg_main_0")`},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%+v prints %q, want %q", tc.s, got, tc.want)
		}
		if back, err := ParseStandbys(tc.want); err != nil || !back.Equal(tc.s) {
			t.Errorf("%q reads as %+v, %v", tc.want, back, err)
		}
	}
	for _, bad := range []string{"*", "ANY 0 ()", `ANY 3 ("db_1", "db_2")`, `ANY x ("db_1")`, `ANY 1 (db_1)`,
		`ANY 1 ("db-1")`, `FIRST 1 ("db_1")`, `ANY 1 ("")`, "regent_gate"} {
		if s, err := ParseStandbys(bad); err == nil {
			t.Errorf("%q read as %+v", bad, s)
		}
	}
	l := &coordinationv1.Lease{}
	l.Annotations = map[string]string{names.AnnotationSyncStandbys: "*"}
	s, err := Decode(l)
	if err == nil || s.Standbys.Kind != Unreadable {
		t.Errorf("an unreadable value decoded as %+v, %v", s.Standbys, err)
	}
	Encode(s, l)
	if l.Annotations[names.AnnotationSyncStandbys] != "*" {
		t.Errorf("encoding an unreadable value changed it to %q", l.Annotations[names.AnnotationSyncStandbys])
	}
}

func ExampleEncode() {
	l := &coordinationv1.Lease{}
	Encode(State{Holder: "db-1", Epoch: 7, Standbys: AnyOf(1, []string{"db-0", "db-2"}), ReleasedLSN: 0x3000060}, l)
	fmt.Println(*l.Spec.HolderIdentity, *l.Spec.LeaseTransitions, l.Annotations)
	// Output: db-1 7 map[regent.dev/released-lsn:0/3000060 regent.dev/synchronous-standby-names:ANY 1 ("db_0", "db_2")]
}
