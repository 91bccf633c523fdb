package instance

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/periodic"
)

// Every timeline switch leaves the segment it happened in twice in pg_wal:
// the old timeline's copy (a .partial on the member promoted, a whole file
// on a follower) and the new timeline's, which holds the same WAL up to the
// switch. PostgreSQL removes both only once the segment falls behind
// wal_keep_size and the checkpoints, so a cluster that fails over often
// keeps a segment more per failover in that window (docs/data-plane.md,
// "The storage budget"): the soak's 30 failovers in 10 minutes took pg_wal
// from 14 to 20 segments. No reader needs the old copy once the checkpoint
// is past it: recovery, pg_rewind and a walsender serving the old timeline
// all read the switch segment from the new timeline's file.

// walPruneEvery is how often superseded segments are looked for.
const walPruneEvery = 10 * time.Second

// walFileName matches a WAL segment's name, whole or partial.
var walFileName = regexp.MustCompile(`^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$`)

// walFile is a segment file in pg_wal.
type walFile struct {
	name     string
	timeline int64
	segno    uint64
}

// parseWALFile reads a segment file's timeline and segment number, for
// segments of segSize bytes; ok is false for any other file.
func parseWALFile(name string, segSize uint64) (walFile, bool) {
	m := walFileName.FindStringSubmatch(name)
	if m == nil || segSize == 0 {
		return walFile{}, false
	}
	tli, _ := strconv.ParseUint(m[1], 16, 32)
	log, _ := strconv.ParseUint(m[2], 16, 32)
	seg, _ := strconv.ParseUint(m[3], 16, 32)
	return walFile{name: name, timeline: int64(tli), segno: log*(0x100000000/segSize) + seg}, true
}

// parseHistory reads a timeline history file: each ancestor timeline and
// the position where it ended.
func parseHistory(text string) (map[int64]lsn.LSN, error) {
	ends := map[int64]lsn.LSN{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return nil, fmt.Errorf("history line %q: want a timeline and its end", line)
		}
		tli, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("history line %q: %w", line, err)
		}
		end, err := lsn.Parse(fields[1])
		if err != nil {
			return nil, fmt.Errorf("history line %q: %w", line, err)
		}
		ends[tli] = end
	}
	return ends, sc.Err()
}

// supersededWAL picks the files of pg_wal that no reader needs: a segment
// of an ancestor timeline (ends, from the history of the last checkpoint's
// timeline) at or after the segment that timeline ended in, behind the
// segment of the last checkpoint's redo (redoSegno), and not waiting for
// the archiver (ready).
func supersededWAL(names []string, segSize uint64, ends map[int64]lsn.LSN, redoSegno uint64, ready map[string]bool) []string {
	var out []string
	for _, name := range names {
		f, ok := parseWALFile(name, segSize)
		if !ok || f.segno >= redoSegno || ready[name] {
			continue
		}
		end, ancestor := ends[f.timeline]
		if ancestor && f.segno >= uint64(end)/segSize {
			out = append(out, name)
		}
	}
	return out
}

// pruneWAL removes superseded segments every walPruneEvery while
// PostgreSQL runs, until ctx ends.
func (in *Instance) pruneWAL(ctx context.Context) {
	periodic.Run(ctx, walPruneEvery, nil, func(ctx context.Context) {
		if !in.running() {
			return
		}
		if removed, err := in.removeSupersededWAL(ctx); err != nil {
			in.log.V(1).Info("Could not look for superseded WAL", "error", err.Error())
		} else if len(removed) > 0 {
			in.log.Info("Removed WAL segments a later timeline holds", "files", removed)
		}
	})
}

// removeSupersededWAL removes what supersededWAL picks, with the files'
// archive status.
func (in *Instance) removeSupersededWAL(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := in.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var redoFile string
	var segSize uint64
	if err := conn.QueryRow(ctx, `SELECT redo_wal_file, (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
		FROM pg_control_checkpoint()`).Scan(&redoFile, &segSize); err != nil {
		return nil, fmt.Errorf("the last checkpoint: %w", err)
	}
	redo, ok := parseWALFile(redoFile, segSize)
	if !ok {
		return nil, fmt.Errorf("the last checkpoint's redo is in %q, not a WAL file", redoFile)
	}
	walDir := filepath.Join(in.cfg.PGData, "pg_wal")
	ends := map[int64]lsn.LSN{}
	if redo.timeline > 1 {
		text, err := os.ReadFile(filepath.Join(walDir, fmt.Sprintf("%08X.history", redo.timeline)))
		if err != nil {
			return nil, err
		}
		if ends, err = parseHistory(string(text)); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	ready := map[string]bool{}
	if status, err := os.ReadDir(filepath.Join(walDir, "archive_status")); err == nil {
		for _, e := range status {
			if name, ok := strings.CutSuffix(e.Name(), ".ready"); ok {
				ready[name] = true
			}
		}
	}
	superseded := supersededWAL(names, segSize, ends, redo.segno, ready)
	if len(superseded) == 0 {
		return nil, nil
	}
	// Never beside a start, stop, promotion or rewind, which change
	// pg_wal and the history: another round comes soon.
	if !in.ops.TryLock() {
		return nil, nil
	}
	defer in.ops.Unlock()
	if !in.running() {
		return nil, nil
	}
	var removed []string
	for _, name := range superseded {
		if err := os.Remove(filepath.Join(walDir, name)); err != nil {
			return removed, err
		}
		_ = os.Remove(filepath.Join(walDir, "archive_status", name+".done"))
		removed = append(removed, name)
	}
	return removed, nil
}
