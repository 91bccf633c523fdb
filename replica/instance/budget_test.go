package instance

import (
	"maps"
	"strings"
	"testing"
)

// The WAL's share of a volume: pg_wal holds at most max_wal_size plus the
// larger of wal_keep_size and max_slot_wal_keep_size, a fifth; the archive
// a twentieth. Bounded on tiny and huge volumes.
func TestStorageBudget(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name    string
		volume  int64
		want    map[string]string
		archive int
	}{
		{"none: Regent's defaults", 0, nil, 64},
		{"1Gi, the sample's", gib, map[string]string{"max_wal_size": "102MB", "min_wal_size": "32MB",
			"wal_keep_size": "102MB", "max_slot_wal_keep_size": "102MB"}, 4},
		{"10Gi", 10 * gib, map[string]string{"max_wal_size": "1024MB", "min_wal_size": "256MB",
			"wal_keep_size": "1024MB", "max_slot_wal_keep_size": "1024MB"}, 32},
		{"100Mi, below every floor", 100 << 20, map[string]string{"max_wal_size": "64MB", "min_wal_size": "32MB",
			"wal_keep_size": "64MB", "max_slot_wal_keep_size": "64MB"}, 4},
		{"1Ti, above every ceiling", 1 << 40, map[string]string{"max_wal_size": "16384MB", "min_wal_size": "1024MB",
			"wal_keep_size": "16384MB", "max_slot_wal_keep_size": "16384MB"}, 3276},
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
	for _, want := range []string{"max_wal_size = '1GB'", "wal_keep_size = '102MB'", "max_slot_wal_keep_size = '102MB'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("user.conf lacks %q:\n%s", want, conf)
		}
	}
}
