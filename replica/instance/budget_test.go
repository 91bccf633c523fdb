package instance

import (
	"maps"
	"strings"
	"testing"
)

// The WAL's share of a volume: pg_wal keeps what the last checkpoint, the
// kept size and the slots need, counted back from the same position, so at
// most a quarter; the archive a tenth. Bounded on tiny and huge volumes.
func TestStorageBudget(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name    string
		volume  int64
		want    map[string]string
		archive int
	}{
		{"none: Regent's defaults", 0, nil, 64},
		{"1Gi, the sample's", gib, map[string]string{"max_wal_size": "204MB", "min_wal_size": "51MB",
			"wal_keep_size": "204MB", "max_slot_wal_keep_size": "256MB"}, 6},
		{"10Gi", 10 * gib, map[string]string{"max_wal_size": "2048MB", "min_wal_size": "512MB",
			"wal_keep_size": "2048MB", "max_slot_wal_keep_size": "2560MB"}, 64},
		{"100Mi, below every floor", 100 << 20, map[string]string{"max_wal_size": "64MB", "min_wal_size": "32MB",
			"wal_keep_size": "64MB", "max_slot_wal_keep_size": "64MB"}, 4},
		{"10Ti, above every ceiling", 10 << 40, map[string]string{"max_wal_size": "16384MB", "min_wal_size": "1024MB",
			"wal_keep_size": "16384MB", "max_slot_wal_keep_size": "32768MB"}, 65536},
	} {
		b := StorageBudget{Volume: tc.volume}
		if got := b.Parameters(); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if got := b.ArchiveSegments(64); got != tc.archive {
			t.Errorf("%s: archive of %d segments, want %d", tc.name, got, tc.archive)
		}
	}
}

// The user's parameters override the budget's.
func TestTheUsersWALSettingsWin(t *testing.T) {
	conf, _ := userConf(StorageBudget{Volume: 1 << 30}, map[string]string{"max_wal_size": "1GB"})
	for _, want := range []string{"max_wal_size = '1GB'", "wal_keep_size = '204MB'", "max_slot_wal_keep_size = '256MB'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("user.conf lacks %q:\n%s", want, conf)
		}
	}
}
