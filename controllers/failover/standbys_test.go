package failover

import (
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
)

// With dataDurability Preferred, followers the operator has seen unable to
// confirm commits for longer than the lease duration (by its own clock)
// leave the quorum when fewer than syncReplicas remain, so that writes go
// on; with Required, and while followers are only briefly away (a restart,
// a failover's reconnection), the quorum stays. Async mode runs the gate.
func TestSyncStandbys(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	const lease = 10 * time.Second
	pods := []string{"db-0", "db-1", "db-2"}
	all := map[string]bool{"db-1": true, "db-2": true}
	only1 := map[string]bool{"db-1": true}
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	gate, full, lowered := leadership.Gate(), leadership.AnyOf(2, []string{"db-1", "db-2"}), leadership.AnyOf(1, []string{"db-1"})
	for _, tc := range []struct {
		name        string
		async       bool
		required    bool
		k           int
		standing    map[string]bool
		since       map[string]time.Time
		positions   map[string]lsn.LSN
		current     leadership.Standbys
		want        leadership.Standbys
		wantRecheck time.Duration
		wantLowered bool
	}{
		{name: "Async: the commit gate", async: true, k: 1, standing: all, want: gate, wantLowered: true},
		{name: "all standing", k: 2, standing: all, want: full},
		{name: "one seen lost for longer than the lease", k: 2, standing: only1,
			since: map[string]time.Time{"db-2": ago(11 * time.Second)}, want: lowered, wantLowered: true},
		{name: "one seen lost for exactly the lease", k: 2, standing: only1,
			since: map[string]time.Time{"db-2": ago(lease)}, want: lowered, wantLowered: true},
		{name: "one seen lost for less than the lease", k: 2, standing: only1,
			since: map[string]time.Time{"db-2": ago(4 * time.Second)}, want: full, wantRecheck: 6 * time.Second},
		{name: "one first seen lost now", k: 2, standing: only1,
			since: map[string]time.Time{"db-2": now}, want: full, wantRecheck: lease},
		{name: "one not standing, not yet timed: its whole grace from now", k: 2, standing: only1,
			want: full, wantRecheck: lease},
		{name: "standing again after a long absence", k: 2, standing: all,
			since: map[string]time.Time{"db-2": ago(time.Minute)}, want: full},
		{name: "fewer lost than the quorum needs", k: 1, standing: only1,
			since: map[string]time.Time{"db-2": ago(time.Minute)},
			want:  leadership.AnyOf(1, []string{"db-1", "db-2"})},
		{name: "all lost: the commit gate", k: 1, standing: map[string]bool{},
			since: map[string]time.Time{"db-1": ago(time.Minute), "db-2": ago(time.Minute)}, want: gate, wantLowered: true},
		{name: "the earliest grace to end is the recheck", k: 2, standing: map[string]bool{},
			since: map[string]time.Time{"db-1": ago(3 * time.Second), "db-2": ago(8 * time.Second)},
			want:  full, wantRecheck: 2 * time.Second},
		{name: "one lost, one catching up: the commit gate", k: 1, standing: only1,
			since:     map[string]time.Time{"db-2": ago(time.Minute)},
			positions: map[string]lsn.LSN{"db-1": 0x3000000}, want: gate, wantLowered: true},
		{name: "one lost, one catching up that the quorum in force names", k: 1, standing: only1,
			since:     map[string]time.Time{"db-2": ago(time.Minute)},
			positions: map[string]lsn.LSN{"db-1": 0x3000000}, current: leadership.AnyOf(1, []string{"db-1", "db-2"}),
			want: leadership.AnyOf(1, []string{"db-1", "db-2"})},
		{name: "one lost, one caught up", k: 1, standing: only1,
			since:     map[string]time.Time{"db-2": ago(time.Minute)},
			positions: map[string]lsn.LSN{"db-1": 0x8F00000}, want: leadership.AnyOf(1, []string{"db-1", "db-2"})},
		{name: "Required keeps the quorum", required: true, k: 2, standing: map[string]bool{},
			since: map[string]time.Time{"db-1": ago(time.Minute), "db-2": ago(time.Minute)}, want: full},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := StandbysInput{Sync: !tc.async, SyncReplicas: tc.k, Preferred: !tc.required, Grace: lease,
				MaxLagBytes: 1 << 20, Leader: "db-0", Pods: pods, Current: tc.current, Standing: tc.standing,
				UnstandingSince: tc.since, LeaderLSN: 0x9000000, Positions: tc.positions, Now: now}
			got, recheck := SyncStandbys(in)
			if !got.Equal(tc.want) {
				t.Errorf("standbys %q, want %q", got, tc.want)
			}
			if recheck != tc.wantRecheck {
				t.Errorf("recheck in %s, want %s", recheck, tc.wantRecheck)
			}
			if l := Lowered(got, tc.k, len(pods)); l != tc.wantLowered {
				t.Errorf("Lowered(%q) = %v, want %v", got, l, tc.wantLowered)
			}
		})
	}
}
