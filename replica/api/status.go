// Package api holds the types the agent serves on its read-only HTTP API
// and the operator reads (docs/architecture.md, rule 5): defined once, imported by both.
package api

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/lsn"
)

// Mode is what the agent intends its PostgreSQL to be.
type Mode string

const (
	// ModeLeader means the agent holds the Lease at the pod's epoch and the
	// pod is labelled leader at that epoch.
	ModeLeader Mode = "Leader"
	// ModeFollower means anything else: PostgreSQL follows the Lease holder.
	ModeFollower Mode = "Follower"
)

// Status is GET /status of an agent.
type Status struct {
	// Pod is the agent's pod.
	Pod string `json:"pod"`
	// Mode is what the agent intends.
	Mode Mode `json:"mode"`
	// Epoch is the Lease's epoch the agent last saw.
	Epoch int64 `json:"epoch"`
	// Leader is the Lease holder the agent last saw.
	Leader string `json:"leader,omitempty"`
	// Running, InRecovery and Timeline are PostgreSQL's.
	Running    bool  `json:"running"`
	InRecovery bool  `json:"inRecovery"`
	Timeline   int64 `json:"timeline,omitempty"`
	// WriteLSN (leader), ReceivedLSN and ReplayedLSN (follower); 0 when
	// unknown.
	WriteLSN    lsn.LSN `json:"writeLSN,omitempty"`
	ReceivedLSN lsn.LSN `json:"receivedLSN,omitempty"`
	ReplayedLSN lsn.LSN `json:"replayedLSN,omitempty"`
	// Streaming says whether a follower's WAL receiver streams.
	Streaming bool `json:"streaming"`
	// LeaseDeadline is, on a leader, when it fences itself unless it
	// renews first.
	LeaseDeadline *time.Time `json:"leaseDeadline,omitempty"`
	// SinceAPIContact is how long before this answer, by the agent's own
	// clock, its last successful round trip to the API server was: a
	// duration, so that no reader compares the agent's clock with its own.
	SinceAPIContact *metav1.Duration `json:"sinceAPIContact,omitempty"`
	// Sealed says this follower sealed the current epoch (the Lease
	// carries regent.dev/sealed-epoch): it accepts no more WAL of it, and
	// SealedLSN is the last position it received.
	Sealed    bool    `json:"sealed"`
	SealedLSN lsn.LSN `json:"sealedLSN,omitempty"`
	// RevokedEpoch is, on a follower, the highest epoch it saw revoked or
	// sealed: it confirms no failsafe of that epoch or any before it.
	RevokedEpoch int64 `json:"revokedEpoch,omitempty"`
	// SinceConfirmed is, on a follower, how long before this answer (its
	// own clock) it last confirmed a leader's failsafe, or its agent
	// started, whichever is later: no confirmation of it is older.
	SinceConfirmed *metav1.Duration `json:"sinceConfirmed,omitempty"`
	// Failsafe says a leader is writing on its followers' confirmations:
	// no renewal holds its deadline any more.
	Failsafe bool `json:"failsafe,omitempty"`
	// SynchronousStandbyNames is the setting the leader's PostgreSQL runs
	// with.
	SynchronousStandbyNames string `json:"synchronousStandbyNames,omitempty"`
	// CommitGate is, on an Async-mode leader, "open" while the commit gate
	// acknowledges the leader's WAL (its lease is valid) and "held" while
	// it acknowledges nothing; empty when no gate runs.
	CommitGate string `json:"commitGate,omitempty"`
	// Fenced says the agent stopped its leader from acknowledging writes.
	Fenced bool `json:"fenced"`
	// DiskUsedBytes and DiskTotalBytes are the data volume's.
	DiskUsedBytes  int64 `json:"diskUsedBytes,omitempty"`
	DiskTotalBytes int64 `json:"diskTotalBytes,omitempty"`
	// Reason explains the current state in a few words.
	Reason string `json:"reason,omitempty"`
	// StartFailure is why the last start of PostgreSQL failed, with
	// PostgreSQL's own words (a parameter it refuses, say); empty once a
	// start succeeds.
	StartFailure string `json:"startFailure,omitempty"`
	// SystemIdentifier is the database system identifier of the data
	// (pg_control); empty without data.
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
	// Reclones counts the times this member's data was removed and the
	// leader cloned again, since its agent started; LastReclone says why.
	Reclones    int64  `json:"reclones,omitempty"`
	LastReclone string `json:"lastReclone,omitempty"`
	// WALShipping is the upload of this pod's WAL archive to the object
	// store; nil without one.
	WALShipping *WALShipping `json:"walShipping,omitempty"`
	// Backup is the last base backup this pod was asked for.
	Backup *BackupProgress `json:"backup,omitempty"`
	// Managed is how the leader last applied the declared roles and
	// databases; nil on a follower and before the first application.
	Managed *ManagedResult `json:"managed,omitempty"`
}

// BackupPhase is where a base backup stands.
type BackupPhase string

// The phases of a base backup.
const (
	BackupRunning   BackupPhase = "Running"
	BackupCompleted BackupPhase = "Completed"
	BackupFailed    BackupPhase = "Failed"
)

// BackupProgress is a base backup taken on this pod (docs/backup.md).
type BackupProgress struct {
	// ID names the backup in the object store (base/<id>/).
	ID    string      `json:"id"`
	Phase BackupPhase `json:"phase"`
	// Bytes counts the data read from PostgreSQL so far.
	Bytes int64 `json:"bytes"`
	// StoredBytes is the compressed size in the store, once completed.
	StoredBytes int64 `json:"storedBytes,omitempty"`
	// Timeline, StartLSN and EndLSN are the WAL the backup spans, once
	// completed: restored, it is consistent at EndLSN.
	Timeline int64   `json:"timeline,omitempty"`
	StartLSN lsn.LSN `json:"startLSN,omitempty"`
	EndLSN   lsn.LSN `json:"endLSN,omitempty"`
	// FromStandby says it was taken on a follower.
	FromStandby bool       `json:"fromStandby,omitempty"`
	StartedAt   time.Time  `json:"startedAt"`
	EndedAt     *time.Time `json:"endedAt,omitempty"`
	Error       string     `json:"error,omitempty"`
}

// WALShipping is what a pod's instance reports of shipping its WAL
// archive to the object store (docs/backup.md).
type WALShipping struct {
	// Leading says this pod uploads; followers only learn what the store
	// holds.
	Leading bool `json:"leading"`
	// LastShipped is the newest file this pod uploaded or found in the
	// store, and when.
	LastShipped   string     `json:"lastShipped,omitempty"`
	LastShippedAt *time.Time `json:"lastShippedAt,omitempty"`
	// Pending counts the archive's files the store does not hold yet;
	// PendingBytes is their size.
	Pending      int   `json:"pending"`
	PendingBytes int64 `json:"pendingBytes"`
	// Error is the last failure; FailingSince says since when uploads
	// have failed without a success between.
	Error        string     `json:"error,omitempty"`
	FailingSince *time.Time `json:"failingSince,omitempty"`
}
