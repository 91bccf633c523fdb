package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/backup"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walship"
)

// RestoreRequest builds a new cluster's first data from a backup in the
// source's object store (Config.Source).
type RestoreRequest struct {
	// BackupID names the backup; empty picks the newest that ends before
	// the target (the newest of all for a named target or none).
	BackupID string `json:"backupID,omitempty"`
	Target   Target `json:"target"`
	// Epoch is the new cluster's first epoch: the promotion at the end of
	// the recovery takes it as its timeline, so it must be above every
	// timeline of the source.
	Epoch int64 `json:"epoch"`
}

// restoreTimeout bounds a restore: the download, and the replay of the
// WAL to the target.
const restoreTimeout = 24 * time.Hour

// Restore brings a backup from the source store into the empty data
// directory, checks it with pg_verifybackup, replays the source's WAL to
// the target on the local socket only, lets PostgreSQL promote at the
// target and stops it cleanly. The data is then a leader's, ready for
// Start, on timeline req.Epoch. A restore that fails leaves the data
// directory empty, so it can be tried again.
func (in *Instance) Restore(ctx context.Context, req RestoreRequest) (err error) {
	in.ops.Lock()
	defer in.ops.Unlock()
	src := in.cfg.Source
	if src == nil {
		return errors.New("restore: no source object store is configured (spec.bootstrap.recovery)")
	}
	if err := in.prepareEmptyDir("restore"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			in.clearPartial()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	m, newest, err := PlanRestore(ctx, src, req)
	if err != nil {
		return err
	}
	if req.Epoch <= newest {
		return fmt.Errorf("restore: the cluster's first epoch %d is not above the source's newest timeline %d", req.Epoch, newest)
	}
	if m.PostgresMajor != "" && m.PostgresMajor != in.cfg.Major {
		return fmt.Errorf("restore: backup %s is of PostgreSQL %s, and this image runs %s", m.ID, m.PostgresMajor, in.cfg.Major)
	}
	start := in.clock.Now()
	in.log.Info("Restoring a backup", "backup", m.ID, "from", src.Where(), "target", req.Target, "timeline", newest, "epoch", req.Epoch)
	if err := backup.Extract(ctx, src, m, in.cfg.PGData, in.chown); err != nil {
		return err
	}
	if _, err := in.tools.run(ctx, time.Hour, "pg_verifybackup", "--quiet", in.cfg.PGData); err != nil {
		return fmt.Errorf("restore: the backup does not match its manifest: %w", err)
	}
	in.log.Info("Backup restored and verified", "backup", m.ID, "bytes", m.Data.RawSize, "duration", in.clock.Since(start).Round(time.Millisecond).String())
	if err := in.reserveTimelinesBelow(newest+1, req.Epoch); err != nil {
		return err
	}
	if err := in.writeFile("recovery.signal", ""); err != nil {
		return err
	}
	target := req.Target
	if target.Time != "" {
		// PostgreSQL's recovery_target_time takes neither "T" nor "Z".
		t, _ := time.Parse(time.RFC3339Nano, target.Time)
		target.Time = t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	}
	s := in.cfg.Settings
	s.Role, s.TLSDir = RoleLeader, ""
	s.Recovery = &Recovery{RestoreCommand: in.cfg.SourceRestoreCommand, Target: target, Timeline: newest}
	if err := in.writeConfig(s); err != nil {
		return err
	}
	if err := in.recover(ctx); err != nil {
		return err
	}
	parent, end, err := in.switchPoint(req.Epoch)
	if err != nil {
		return err
	}
	if req.Target == (Target{}) && parent != newest {
		return fmt.Errorf("restore: the recovery ended on timeline %d at %s, before the source's newest timeline %d: WAL between is missing or unreadable in %s",
			parent, end, newest, src.Where())
	}
	if req.Target == (Target{}) {
		// Without a target, the recovery ends where the store's WAL does,
		// or at the first segment it could not read: a gap must not pass
		// for the end.
		if err := checkNoWALBeyond(ctx, src, newest, end); err != nil {
			return err
		}
	}
	in.log.Info("Recovered to the target and promoted", "lsn", end.String(), "duration", in.clock.Since(start).Round(time.Millisecond).String())
	return nil
}

// PlanRestore picks the backup to restore for req and returns it with the
// source's newest timeline.
func PlanRestore(ctx context.Context, src *objectstore.Store, req RestoreRequest) (backup.Manifest, int64, error) {
	all, err := backup.List(ctx, src)
	if err != nil && len(all) == 0 {
		return backup.Manifest{}, 0, fmt.Errorf("restore: %w", err)
	}
	if len(all) == 0 {
		return backup.Manifest{}, 0, fmt.Errorf("restore: %s holds no backup", src.Where())
	}
	newest, err := NewestTimeline(ctx, src)
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("restore: %w", err)
	}
	for _, m := range all {
		newest = max(newest, m.Timeline)
	}
	if req.BackupID != "" {
		for _, m := range all {
			if m.ID == req.BackupID {
				return m, newest, nil
			}
		}
		return backup.Manifest{}, 0, fmt.Errorf("restore: %s holds no backup %s", src.Where(), req.BackupID)
	}
	pick := all[len(all)-1]
	switch {
	case req.Target.Time != "":
		t, err := time.Parse(time.RFC3339Nano, req.Target.Time)
		if err != nil {
			return backup.Manifest{}, 0, fmt.Errorf("restore: target time %q: want RFC 3339, such as 2026-11-29T10:00:00Z", req.Target.Time)
		}
		ok := false
		for _, m := range all {
			if !m.EndTime.After(t) {
				pick, ok = m, true
			}
		}
		if !ok {
			return backup.Manifest{}, 0, fmt.Errorf("restore: target time %s is before the end of the first backup (%s, ended %s): the first recoverable point",
				req.Target.Time, all[0].ID, all[0].EndTime.Format(time.RFC3339))
		}
	case req.Target.LSN != "":
		l, err := lsn.Parse(req.Target.LSN)
		if err != nil {
			return backup.Manifest{}, 0, fmt.Errorf("restore: target LSN: %w", err)
		}
		ok := false
		for _, m := range all {
			if m.EndLSN <= l {
				pick, ok = m, true
			}
		}
		if !ok {
			return backup.Manifest{}, 0, fmt.Errorf("restore: target LSN %s is before the end of the first backup (%s, %s)", l, all[0].ID, all[0].EndLSN)
		}
	}
	return pick, newest, nil
}

// NewestTimeline is the highest timeline whose history file is in the
// store, 1 with none.
func NewestTimeline(ctx context.Context, src *objectstore.Store) (int64, error) {
	objs, err := src.List(ctx, walship.WALPrefix)
	if err != nil {
		return 0, err
	}
	newest := int64(1)
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walship.WALPrefix), ".zst")
		var tli int64
		if strings.HasSuffix(name, ".history") {
			if _, err := fmt.Sscanf(name, "%08X.history", &tli); err == nil {
				newest = max(newest, tli)
			}
		}
	}
	return newest, nil
}

// checkNoWALBeyond fails when the store holds WAL of timeline tli past
// end's segment: the recovery stopped early, at a segment it could not
// read.
func checkNoWALBeyond(ctx context.Context, src *objectstore.Store, tli int64, end lsn.LSN) error {
	objs, err := src.List(ctx, walship.WALPrefix+fmt.Sprintf("%08X", tli))
	if err != nil {
		return err
	}
	last := fmt.Sprintf("%08X%08X%08X", tli, uint64(end)>>32, (uint64(end)&0xFFFFFFFF)>>24)
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walship.WALPrefix), ".zst")
		if len(name) == 24 && name > last {
			return fmt.Errorf("restore: the recovery ended at %s, but %s holds WAL after it (%s): a segment between is missing or unreadable",
				end, src.Where(), name)
		}
	}
	return nil
}

// switchPoint reads the history file of timeline tli, which the
// promotion at the end of the recovery wrote: the timeline the recovery
// ended on, and where.
func (in *Instance) switchPoint(tli int64) (int64, lsn.LSN, error) {
	b, err := os.ReadFile(filepath.Join(in.cfg.PGData, "pg_wal", fmt.Sprintf("%08X.history", tli)))
	if err != nil {
		return 0, 0, fmt.Errorf("restore: the recovery did not end on timeline %d: %w", tli, err)
	}
	var parent int64
	var end lsn.LSN
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		p, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		l, err := lsn.Parse(f[1])
		if err != nil {
			continue
		}
		parent, end = p, l
	}
	if parent == 0 {
		return 0, 0, fmt.Errorf("restore: the history file of timeline %d names no parent", tli)
	}
	return parent, end, nil
}

// recover runs PostgreSQL on the restored data until it has promoted at
// its target, then stops it cleanly.
func (in *Instance) recover(ctx context.Context) error {
	cmd := in.tools.command(context.Background(), "postgres", "-D", in.cfg.PGData)
	tail := newLogTail(os.Stderr, 256)
	cmd.Stdout, cmd.Stderr = tail, tail
	if err := in.tools.children.start(cmd); err != nil {
		return fmt.Errorf("restore: start postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- in.tools.children.wait(cmd) }()
	stop := func() error {
		_ = cmd.Process.Signal(os.Interrupt) // fast shutdown
		select {
		case err := <-exited:
			return err
		case <-time.After(5 * time.Minute):
			_ = cmd.Process.Kill()
			return <-exited
		}
	}
	for {
		done := false
		if conn, err := in.connect(ctx); err == nil {
			var inRecovery bool
			if conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery) == nil && !inRecovery {
				err := in.setSuperuserPassword(ctx, conn)
				if err == nil {
					_, err = conn.Exec(ctx, "CHECKPOINT")
				}
				if err != nil {
					_ = conn.Close(ctx)
					_ = stop()
					return fmt.Errorf("restore: after the recovery: %w", err)
				}
				done = true
			}
			_ = conn.Close(ctx)
		}
		if done {
			if err := stop(); err != nil {
				return fmt.Errorf("restore: stopping PostgreSQL after the recovery: %w", err)
			}
			return nil
		}
		select {
		case err := <-exited:
			why := restoreFailure(tail.lines())
			return fmt.Errorf("restore: PostgreSQL stopped during the recovery (%w): %s", err, why)
		case <-ctx.Done():
			_ = stop()
			return fmt.Errorf("restore: the recovery did not end within %s", restoreTimeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// setSuperuserPassword gives the postgres role this cluster's password
// (the restored one is the source's).
func (in *Instance) setSuperuserPassword(ctx context.Context, conn *pgx.Conn) error {
	pw, err := os.ReadFile(in.cfg.SuperuserPasswordFile)
	if err != nil {
		return err
	}
	var stmt string
	if err := conn.QueryRow(ctx, "SELECT format('ALTER ROLE postgres PASSWORD %L', $1::text)", strings.TrimSpace(string(pw))).Scan(&stmt); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, stmt)
	return err
}

// restoreFailure says why a recovery stopped, from PostgreSQL's output:
// what wal-restore said of the file it could not restore, else the first
// FATAL (the ones after it are the shutdown that followed: the archiver's
// command killed, say).
func restoreFailure(lines []string) string {
	for _, line := range lines {
		if i := strings.Index(line, "wal-restore "); i >= 0 && !strings.Contains(line, "restore_command") {
			return strings.TrimSpace(line[i:])
		}
	}
	for i, line := range lines {
		if strings.Contains(line, "FATAL:") || strings.Contains(line, "PANIC:") {
			return lastFatal(lines[i : i+1])
		}
	}
	return lastFatal(lines)
}

// reserveTimelinesBelow writes placeholder history files for the
// timelines from, from+1 … up to epoch-1, so that the promotion at the end
// of the recovery takes timeline epoch (see reserveTimelines).
func (in *Instance) reserveTimelinesBelow(from, epoch int64) error {
	for tli := from; tli < epoch; tli++ {
		content := fmt.Sprintf("# Timeline %d was never used: Regent reserved it so that the restore's promotion gets timeline %d.\n", tli, epoch)
		if err := in.writeFile(filepath.Join("pg_wal", fmt.Sprintf("%08X.history", tli)), content); err != nil {
			return fmt.Errorf("reserve timeline %d: %w", tli, err)
		}
	}
	return nil
}

// chown gives path to the database's user when instance runs as root.
func (in *Instance) chown(path string) error {
	if c := in.cfg.Credential; c != nil {
		return os.Lchown(path, int(c.Uid), int(c.Gid))
	}
	return nil
}
