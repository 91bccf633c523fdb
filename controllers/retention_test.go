package controllers

import (
	"slices"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/backup"
)

func TestRetentionKeepsWhatARecoveryInItsWindowNeeds(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	day := func(d int) backup.Manifest {
		end := now.Add(-time.Duration(d) * 24 * time.Hour)
		return backup.Manifest{ID: backup.NewID(end), EndTime: end}
	}
	all := []backup.Manifest{day(10), day(8), day(6), day(3), day(1)}
	ids := func(ms []backup.Manifest) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		spec       *regentv1.RetentionSpec
		keep, drop []backup.Manifest
	}{
		{"no retention keeps everything", nil, all, nil},
		{"a count keeps the newest", &regentv1.RetentionSpec{Backups: ptr.To[int32](2)}, all[3:], all[:3]},
		{"a window keeps the newest backup before it too", &regentv1.RetentionSpec{RecoveryWindow: "7d"}, all[1:], all[:1]},
		{"a window in hours", &regentv1.RetentionSpec{RecoveryWindow: "36h"}, all[3:], all[:3]},
		{"the newest backup stays, even out of the window", &regentv1.RetentionSpec{RecoveryWindow: "1h"}, all[4:], all[:4]},
	} {
		keep, drop, err := expired(all, tc.spec, now)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(keep), ids(tc.keep)) || !slices.Equal(ids(drop), ids(tc.drop)) {
			t.Errorf("%s: keep %v drop %v, want keep %v drop %v", tc.name, ids(keep), ids(drop), ids(tc.keep), ids(tc.drop))
		}
	}
}

func TestRetentionRemovesOnlyTheWALBeforeTheOldestBackupKept(t *testing.T) {
	keys := []string{"wal/00000002.history.zst", "wal/000000010000000000000003.zst", "wal/000000010000000000000004.zst",
		"wal/000000010000000000000004.00000028.backup.zst", "wal/000000010000000000000005.partial.zst",
		"wal/000000020000000000000005.zst", "wal/000000020000000000000006.zst"}
	start, _ := lsn.Parse("0/5000028")
	got := walBefore(keys, backup.Manifest{StartLSN: start})
	want := []string{"wal/000000010000000000000003.zst", "wal/000000010000000000000004.zst", "wal/000000010000000000000004.00000028.backup.zst"}
	if !slices.Equal(got, want) {
		t.Errorf("removes %v, want %v", got, want)
	}
}
