package instance

import (
	"fmt"
	"maps"
)

// StorageBudget divides a data volume between the data and what grows with
// writes: PostgreSQL's WAL (between checkpoints, kept for followers and
// pg_rewind, held by slots) and the pod's WAL archive (docs/data-plane.md,
// "The storage budget"). pg_wal spans from the oldest segment a checkpoint,
// wal_keep_size or a slot needs, counted back from the current position, to
// the segments recycled ahead, up to max_wal_size past the last checkpoint:
// at most max_wal_size plus the larger of the two keeps, a fifth of the
// volume. With the archive's twentieth, WAL takes a quarter at most and the
// rest is the data's.
type StorageBudget struct {
	// Volume is the data volume's size in bytes; 0 leaves PostgreSQL's own
	// defaults and the archive's.
	Volume int64
}

const (
	mib     = 1 << 20
	segment = 16 * mib
)

// Shares of the volume, and the bounds that keep each sane on very small
// and very large volumes.
var (
	maxWALShare  = share{num: 1, den: 10, floor: 4 * segment, ceil: 16 << 30} // checkpoints start once about half of this is written
	minWALShare  = share{num: 1, den: 40, floor: 2 * segment, ceil: 1 << 30}  // recycled rather than removed
	keepShare    = share{num: 1, den: 10, floor: 4 * segment, ceil: 16 << 30} // back to the checkpoint before a divergence, for pg_rewind
	slotShare    = share{num: 1, den: 10, floor: 4 * segment, ceil: 16 << 30} // the most a lagging follower's slot holds
	archiveShare = share{num: 1, den: 20, floor: 4 * segment, ceil: 1 << 40}  // the pod's own archive
)

type share struct{ num, den, floor, ceil int64 }

func (s share) of(volume int64) int64 { return min(max(volume/s.den*s.num, s.floor), s.ceil) }

// Parameters are the WAL settings of the budget, as PostgreSQL writes
// sizes; a user's spec.postgres.parameters override them.
func (b StorageBudget) Parameters() map[string]string {
	if b.Volume <= 0 {
		return nil
	}
	maxWAL := maxWALShare.of(b.Volume)
	return map[string]string{
		"max_wal_size":           megabytes(maxWAL),
		"min_wal_size":           megabytes(min(minWALShare.of(b.Volume), maxWAL/2)),
		"wal_keep_size":          megabytes(keepShare.of(b.Volume)),
		"max_slot_wal_keep_size": megabytes(slotShare.of(b.Volume)),
	}
}

// ArchiveSegments is how many WAL segments the pod's archive keeps.
func (b StorageBudget) ArchiveSegments(fallback int) int {
	if b.Volume <= 0 {
		return fallback
	}
	return int(archiveShare.of(b.Volume) / segment)
}

func megabytes(n int64) string { return fmt.Sprintf("%dMB", n/mib) }

// withBudget is Regent's defaults with the budget's settings.
func withBudget(b StorageBudget) map[string]string {
	out := maps.Clone(defaultParameters)
	maps.Copy(out, b.Parameters())
	return out
}
