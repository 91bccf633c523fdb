package agent

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// A follower between two leaders stays in its Services for a short grace,
// so that the winner among them serves as soon as it is promoted instead
// of waiting for the kubelet's next probe; one that lost its stream for
// longer, or never streamed, leaves them.
func TestAFollowerBetweenLeadersStaysReadyForAGrace(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_000_000, 0))
	a := New(Config{Clock: clk})
	a.ls.pgStatus = instance.Status{Running: true, Accepting: true, InRecovery: true}
	if ok, why, _ := a.ready(); ok {
		t.Fatalf("a follower that never streamed is ready (%s)", why)
	}
	a.ls.pgStatus.Streaming, a.ls.streamedAt = true, clk.Now()
	if ok, why, _ := a.ready(); !ok {
		t.Fatalf("a streaming follower is not ready: %s", why)
	}
	a.ls.pgStatus.Streaming = false
	clk.Step(followerStreamGrace - time.Second)
	if ok, why, _ := a.ready(); !ok {
		t.Fatalf("a follower that streamed %s ago is not ready: %s", followerStreamGrace-time.Second, why)
	}
	clk.Step(time.Second)
	if ok, why, _ := a.ready(); ok {
		t.Fatalf("a follower that has not streamed for %s is ready (%s)", followerStreamGrace, why)
	}
}

// A probe that lands while a new leader's promotion finishes waits for it
// (within the probe's timeout) rather than answering not ready, which
// would keep the leader out of its Service until the next probe.
func TestReadyzWaitsForAPromotionToFinish(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_000_000, 0))
	a := New(Config{Clock: clk})
	a.ls.mode = api.ModeLeader
	a.ls.deadline = clk.Now().Add(time.Minute)
	a.ls.pgStatus = instance.Status{Running: true, Accepting: true, InRecovery: true}
	if ok, why := a.readyWithin(context.Background(), 50*time.Millisecond); ok {
		t.Fatalf("a leader still in recovery is ready (%s)", why)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		a.ls.mu.Lock()
		a.ls.pgStatus.InRecovery, a.ls.rolesDone = false, true
		a.ls.mu.Unlock()
	}()
	start := time.Now()
	if ok, why := a.readyWithin(context.Background(), readyzHold); !ok {
		t.Fatalf("a leader promoted while the probe waited is not ready: %s", why)
	}
	if waited := time.Since(start); waited >= readyzHold {
		t.Errorf("the probe waited %s, its whole hold, for a promotion that took 100 ms", waited)
	}
	// A fenced leader is not worth waiting for.
	a.ls.mu.Lock()
	a.ls.fenced = true
	a.ls.mu.Unlock()
	start = time.Now()
	if ok, _ := a.readyWithin(context.Background(), readyzHold); ok || time.Since(start) > readyzHold/2 {
		t.Errorf("a fenced leader: ready %v after %s, want not ready at once", ok, time.Since(start))
	}
}
