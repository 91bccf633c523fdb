package instance

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/walship"
)

// ClusterStateUnstartedBackup is the ClusterState of a base backup that
// PostgreSQL has not started from yet.
const ClusterStateUnstartedBackup = "base backup not started yet"

// Status is what instance reports of PostgreSQL.
type Status struct {
	// Running says whether the postmaster runs; Accepting, whether it
	// answered this status's queries (not while it starts: crash
	// recovery, say).
	Running   bool `json:"running"`
	Accepting bool `json:"accepting,omitempty"`
	// Role is the role PostgreSQL was started or promoted in.
	Role Role `json:"role,omitempty"`
	// InRecovery is pg_is_in_recovery(): true on a follower.
	InRecovery bool `json:"inRecovery"`
	// Timeline is the current timeline.
	Timeline int64 `json:"timeline,omitempty"`
	// WriteLSN is the leader's current WAL position; ReceivedLSN and
	// ReplayedLSN a follower's.
	WriteLSN    lsn.LSN `json:"writeLSN,omitempty"`
	ReceivedLSN lsn.LSN `json:"receivedLSN,omitempty"`
	ReplayedLSN lsn.LSN `json:"replayedLSN,omitempty"`
	// Streaming says whether a follower's WAL receiver streams.
	Streaming bool `json:"streaming"`
	// WaitingForWAL says a follower's startup process has replayed all
	// the WAL it has and waits for more: its replay position is then the
	// end of the WAL on its disk.
	WaitingForWAL bool `json:"waitingForWAL,omitempty"`
	// SynchronousStandbyNames is the running PostgreSQL's setting.
	SynchronousStandbyNames string `json:"synchronousStandbyNames,omitempty"`
	// Deadline is the watchdog's, while a leader runs.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Fenced says why the watchdog last stopped a leader.
	Fenced string `json:"fenced,omitempty"`
	// DiskUsedBytes and DiskTotalBytes are the data volume's (statfs),
	// whether PostgreSQL runs or not.
	DiskUsedBytes  int64 `json:"diskUsedBytes,omitempty"`
	DiskTotalBytes int64 `json:"diskTotalBytes,omitempty"`
	// LastExit is how PostgreSQL last ended.
	LastExit string `json:"lastExit,omitempty"`
	// MissingWAL is the WAL segment this follower's leader said, in the
	// last 30 seconds, that it no longer has.
	MissingWAL string `json:"missingWAL,omitempty"`
	// ClusterState is pg_control's "Database cluster state" while
	// PostgreSQL is stopped: "in production" or "shut down" mean the data
	// was last a leader's, so it must be rewound before it follows.
	ClusterState string `json:"clusterState,omitempty"`
	// Data is the data directory's state, or the error that makes it
	// unusable.
	Data string `json:"data"`
	// SystemIdentifier is the data's database system identifier
	// (pg_control); empty without data.
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
	// WALShipping is the upload of the archive to the object store; nil
	// without one.
	WALShipping *walship.Status `json:"walShipping,omitempty"`
	// Backup is the last base backup asked for.
	Backup *api.BackupProgress `json:"backup,omitempty"`
}

// Status reports PostgreSQL's state; queries that fail leave their fields
// empty.
func (in *Instance) Status(ctx context.Context) Status {
	in.mu.Lock()
	st := Status{Running: in.pg != nil, Role: in.role, Fenced: in.fenced, LastExit: in.lastExit}
	if in.missingWAL != "" && in.clock.Since(in.missingWALAt) < 30*time.Second {
		st.MissingWAL = in.missingWAL
	}
	if !in.deadline.IsZero() {
		d := in.deadline
		st.Deadline = &d
	}
	if in.backup != nil {
		b := *in.backup
		st.Backup = &b
	}
	in.mu.Unlock()
	if in.shipper != nil {
		ship := in.shipper.Status()
		st.WALShipping = &ship
	}

	st.DiskUsedBytes, st.DiskTotalBytes = diskUsage(filepath.Dir(filepath.Clean(in.cfg.PGData)))
	if state, err := inspect(in.cfg.PGData, in.cfg.Major); err != nil {
		st.Data = err.Error()
	} else {
		st.Data = string(state)
	}
	if !st.Running {
		st.Role = ""
		if control, err := in.controlData(ctx); err == nil && control != nil {
			st.ClusterState = control["Database cluster state"]
			st.SystemIdentifier = control["Database system identifier"]
		}
		// A base backup that never started keeps its source's pg_control
		// ("in production") beside a backup_label: it is a follower's copy,
		// not a former leader's data, and needs no rewind.
		if _, err := os.Stat(filepath.Join(in.cfg.PGData, "backup_label")); err == nil {
			st.ClusterState = ClusterStateUnstartedBackup
		}
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := in.connect(ctx)
	if err != nil {
		return st
	}
	defer conn.Close(ctx)
	// The timeline: see followerTimelineSQL.
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		`+followerTimelineSQL+`,
		pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
		COALESCE((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
		EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'startup'
			AND wait_event IN ('RecoveryWalStream', 'RecoveryRetrieveRetryInterval'))`).
		Scan(&st.InRecovery, &st.Timeline, &st.ReceivedLSN, &st.ReplayedLSN, &st.WriteLSN, &st.Streaming, &st.WaitingForWAL)
	st.Accepting = err == nil
	_ = conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&st.SynchronousStandbyNames)
	_ = conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&st.SystemIdentifier)
	if !st.InRecovery {
		// The checkpoint's timeline lags a promotion; the WAL file name
		// carries the current one.
		var tli int64
		if conn.QueryRow(ctx, `SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`).Scan(&tli) == nil {
			st.Timeline = tli
		}
	}
	return st
}

// followerTimelineSQL is the newest timeline a follower knows: the last
// restartpoint's lags behind (for minutes after a rewind or a failover), so
// also the timeline it streams and the newest history file it holds
// (fetched when it learnt of the timeline, which
// recovery_target_timeline=latest then follows).
const followerTimelineSQL = `GREATEST((SELECT timeline_id FROM pg_control_checkpoint()),
	COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0),
	COALESCE((SELECT max(('x' || substr(name, 1, 8))::bit(32)::bigint) FROM pg_ls_waldir()
		WHERE name ~ '^[0-9A-F]{8}\.history$'), 0))`

// diskUsage is the used and total bytes of the filesystem under dir (zero
// when it cannot tell). Used counts what the volume's users cannot have:
// total less what is available to them.
func diskUsage(dir string) (used, total int64) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0
	}
	total = int64(st.Blocks) * st.Bsize             //nolint:gosec // G115: block counts fit an int64
	return total - int64(st.Bavail)*st.Bsize, total //nolint:gosec // G115: as above
}
