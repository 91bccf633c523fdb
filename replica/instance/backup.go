package instance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/backup"
)

// BackupRequest asks for a base backup into the object store.
type BackupRequest struct {
	// ID names it (backup.NewID).
	ID string `json:"id"`
	// Conninfo reaches this pod's own PostgreSQL as the replication role
	// (its local socket).
	Conninfo string `json:"conninfo"`
}

// backupTimeout bounds one base backup.
const backupTimeout = 24 * time.Hour

// StartBackup starts a base backup of this pod's running PostgreSQL into
// the object store and returns; Status reports its progress. Asking again
// for the backup that runs or ran last is harmless: the agent asks at
// every pass until it sees the outcome.
func (in *Instance) StartBackup(req BackupRequest) error {
	if in.cfg.Store == nil {
		return errors.New("no object store is configured (spec.backup.objectStore)")
	}
	if !backup.ValidID(req.ID) {
		return fmt.Errorf("backup ID %q: want a UTC time such as 20260102T150405Z", req.ID)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if b := in.backup; b != nil {
		if b.ID == req.ID {
			return nil
		}
		if b.Phase == api.BackupRunning {
			return fmt.Errorf("backup %s is still running", b.ID)
		}
	}
	if in.pg == nil {
		return errors.New("PostgreSQL is not running")
	}
	in.backup = &api.BackupProgress{ID: req.ID, Phase: api.BackupRunning, StartedAt: in.clock.Now().UTC(),
		FromStandby: in.role == RoleFollower}
	go in.runBackup(req, in.role == RoleFollower)
	return nil
}

// BackupProgress returns the last backup's progress, nil if none.
func (in *Instance) BackupProgress() *api.BackupProgress {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.backup == nil {
		return nil
	}
	b := *in.backup
	return &b
}

// runBackup streams pg_basebackup's tar (-X fetch: with the WAL that makes
// it consistent, so that it restores without the store's WAL) into the
// store through backup.Take.
func (in *Instance) runBackup(req BackupRequest, fromStandby bool) {
	ctx, cancel := context.WithTimeout(in.life, backupTimeout)
	defer cancel()
	m, err := in.takeBackup(ctx, req, fromStandby)
	now := in.clock.Now().UTC()
	in.mu.Lock()
	defer in.mu.Unlock()
	b := in.backup
	b.EndedAt = &now
	if err != nil {
		b.Phase, b.Error = api.BackupFailed, err.Error()
		in.log.Error(err, "Base backup failed", "id", req.ID)
		return
	}
	b.Phase, b.Bytes, b.StoredBytes = api.BackupCompleted, m.Data.RawSize, m.Data.Size
	b.Timeline, b.StartLSN, b.EndLSN = m.Timeline, m.StartLSN, m.EndLSN
	in.log.Info("Base backup completed", "id", req.ID, "bytes", m.Data.RawSize, "stored", m.Data.Size,
		"startLSN", m.StartLSN.String(), "endLSN", m.EndLSN.String(), "duration", now.Sub(b.StartedAt).Round(time.Millisecond).String())
}

func (in *Instance) takeBackup(ctx context.Context, req BackupRequest, fromStandby bool) (backup.Manifest, error) {
	var sizeHint int64
	if conn, err := in.connect(ctx); err == nil {
		_ = conn.QueryRow(ctx, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database").Scan(&sizeHint)
		_ = conn.Close(ctx)
	}
	info := backup.Info{ID: req.ID, Cluster: in.cfg.Cluster, Member: in.cfg.ClusterName, FromStandby: fromStandby,
		SystemIdentifier: in.systemIdentifier(ctx), PostgresMajor: in.cfg.Major}
	toolCtx, stopTool := context.WithCancel(ctx)
	defer stopTool()
	rest, password := withoutPassword(req.Conninfo)
	var env []string
	if password != "" {
		env = []string{"PGPASSWORD=" + password}
	}
	tar, wait, err := in.tools.stream(toolCtx, backupTimeout, env, "pg_basebackup", "--dbname="+rest,
		"--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast", "--no-password",
		"--label=regent "+req.ID)
	if err != nil {
		return backup.Manifest{}, err
	}
	progress := func(n int64) {
		in.mu.Lock()
		in.backup.Bytes = n
		in.mu.Unlock()
	}
	m, err := backup.Upload(ctx, in.cfg.Store, tar, info, sizeHint, progress)
	if err != nil {
		stopTool()
	}
	if werr := wait(); werr != nil {
		err = errors.Join(werr, err)
	}
	if err == nil {
		m, err = backup.Commit(ctx, in.cfg.Store, m)
	}
	if err != nil {
		// Without its manifest the data is no backup; remove what was
		// stored of it.
		rmCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = in.cfg.Store.Remove(rmCtx, backup.DataKey(req.ID))
		return backup.Manifest{}, err
	}
	return m, nil
}
