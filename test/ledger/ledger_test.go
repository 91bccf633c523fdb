package ledger

import (
	"testing"
	"time"
)

func TestAfterThawAndLostTellSplitBrainFromInFlight(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	frozen, thawed := t0.Add(time.Second), t0.Add(10*time.Second)
	acks := []Ack{
		{ID: 1, ExecAt: t0, At: t0}, // before the freeze
		{ID: 2, ExecAt: t0.Add(900 * time.Millisecond), At: t0.Add(11 * time.Second)}, // decided before, delivered after the thaw
		{ID: 3, ExecAt: t0.Add(11 * time.Second), At: t0.Add(11 * time.Second)},       // executed after the freeze
	}
	if late, inFlight := AfterThaw(acks, frozen, thawed); late != 1 || inFlight != 1 {
		t.Errorf("late %d, in flight %d; want 1 and 1", late, inFlight)
	}
	if lost, after := Lost(acks, map[int]bool{1: true}, frozen); lost != 2 || after != 1 {
		t.Errorf("lost %d (%d after the freeze); want 2 (1)", lost, after)
	}
}
