package agent

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/regent-dev/regent/internal/leadership"
)

// A WAL receiver's connection refused while the epoch is sealed is held
// until this follower has recorded its seal (so that PostgreSQL waits for
// WAL long enough to be seen), and not at all once it has, or when the
// epoch is not sealed: a follower must reach a new leader at once.
func TestARefusedReceiverIsHeldOnlyWhileTheSealIsUnrecorded(t *testing.T) {
	a := New(Config{})
	lease := func(epoch, sealed int64) *coordinationv1.Lease {
		l := &coordinationv1.Lease{}
		leadership.Encode(leadership.State{Holder: "db-0", Epoch: epoch, SealedEpoch: sealed}, l)
		return l
	}
	held := func() time.Duration {
		start := time.Now()
		a.holdWhileSealing(context.Background())
		return time.Since(start)
	}

	a.ls.lease, a.ls.epoch = lease(3, 2), 3
	if d := held(); d > 100*time.Millisecond {
		t.Fatalf("held %s in an unsealed epoch", d)
	}

	a.ls.mu.Lock()
	a.ls.lease = lease(3, 3)
	a.ls.mu.Unlock()
	go func() {
		time.Sleep(300 * time.Millisecond)
		a.ls.mu.Lock()
		a.ls.sealedEpoch = 3
		a.ls.mu.Unlock()
	}()
	if d := held(); d < 250*time.Millisecond || d >= sealHold {
		t.Fatalf("held %s while sealing; want until the seal was recorded (300 ms)", d)
	}
	if d := held(); d > 100*time.Millisecond {
		t.Fatalf("held %s once the seal was recorded", d)
	}
}
