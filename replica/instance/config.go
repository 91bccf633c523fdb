// Package instance is `regent instance`, PID 1 of the postgres container: the
// only process that touches PGDATA or runs PostgreSQL's tools. It takes
// orders from the agent over a unix socket (initdb, base backup, rewind,
// start as leader or follower, stop, promote, status), writes the
// configuration Regent owns, reaps zombies, forwards signals, and is the
// watchdog: while it runs a leader, PostgreSQL is stopped at once when the
// agent stops refreshing its deadline (docs/data-plane.md).
package instance

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// Role is how PostgreSQL runs.
type Role string

const (
	// RoleLeader accepts writes (while its watchdog deadline holds).
	RoleLeader Role = "leader"
	// RoleFollower replays the leader's WAL through the local agent.
	RoleFollower Role = "follower"
)

// Settings are what the configuration depends on.
type Settings struct {
	// PodIP is the address PostgreSQL listens on for the cluster (besides
	// its socket).
	PodIP string
	// Loopback adds the pod's 127.0.0.1, for kubectl port-forward (which
	// connects there inside the pod); it is the pod's own only where pods
	// do not share a network namespace.
	Loopback bool
	// SocketDir holds PostgreSQL's socket (and the agent's relay socket).
	SocketDir string
	// ClusterName names the instance in ps and logs (the pod name).
	ClusterName string
	// Parameters are the user's settings (spec.postgres.parameters).
	Parameters map[string]string
	// Role decides the standby settings.
	Role Role
	// PrimaryConninfo and PrimarySlotName: how a follower streams (the
	// local agent's relay socket, in a pod).
	PrimaryConninfo, PrimarySlotName string
	// SynchronousStandbyNames is set by the agent on a leader.
	SynchronousStandbyNames string
	// Budget sizes the WAL from the data volume's size; the user's
	// parameters override it.
	Budget StorageBudget
	// TLSDir holds the pod's server.crt and server.key (SetTLS); empty
	// leaves TLS off, and then no remote client can log in (hbaConf).
	TLSDir string
	// ArchiveCommand and RestoreCommand ship WAL through the agents
	// (`regent wal-push`, `regent wal-fetch`); empty leaves archiving off.
	ArchiveCommand, RestoreCommand string
	// PromotingFile, while it exists, makes RestoreCommand find nothing
	// at once: a promotion's history probes then cost no process and no
	// round trip through the agents (see Instance.promote).
	PromotingFile string
	// Recovery, set only while a restore replays WAL from the object
	// store, replaces the follower's settings with a targeted recovery
	// that promotes at its end, reachable only on the local socket.
	Recovery *Recovery
}

// Recovery is a point-in-time recovery's settings (docs/backup.md).
type Recovery struct {
	// RestoreCommand reads WAL from the source's object store
	// (`regent wal-restore`).
	RestoreCommand string
	// Target is where to stop; the zero Target replays all the WAL.
	Target Target
	// Timeline is the source's newest timeline: the recovery follows the
	// source's history to it (recovery_target_timeline), and the
	// promotion at its end takes the next free one.
	Timeline int64
}

// Target is a recovery target: at most one field is set.
type Target struct {
	// Time is a timestamp PostgreSQL reads (RFC 3339 works).
	Time string `json:"time,omitempty"`
	// LSN is a WAL position, X/Y.
	LSN string `json:"lsn,omitempty"`
	// Name is a restore point made with pg_create_restore_point().
	Name string `json:"name,omitempty"`
}

// defaultParameters are Regent's defaults for settings a user may change.
var defaultParameters = map[string]string{
	// A follower whose stream was cut (a failover re-points every relay)
	// retries after this instead of PostgreSQL's 5 s: it is also how soon
	// a Sync-mode leader gets its first acknowledgement after a failover.
	"wal_retrieve_retry_interval": "250ms",
	// A deposed leader's own WAL back to the checkpoint before the
	// divergence is what pg_rewind reads: without some kept, the shutdown
	// checkpoint removes it and only a fresh clone is left. The storage
	// budget replaces this with its share of the volume.
	"wal_keep_size": "128MB",
}

// userConf renders the user's parameters, skipping any Regent owns (the
// CRD refuses them; an object that slipped past it must not break
// fencing).
func userConf(budget StorageBudget, user map[string]string) (string, []string) {
	params := withBudget(budget)
	maps.Copy(params, user)
	var b strings.Builder
	b.WriteString("# spec.postgres.parameters, written by regent instance at every start.\n")
	var ignored []string
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if slices.Contains(regentv1.OwnedParameters, k) {
			ignored = append(ignored, k)
			continue
		}
		fmt.Fprintf(&b, "%s = %s\n", k, quote(params[k]))
	}
	return b.String(), ignored
}

// regentConf renders the settings Regent owns. It is included after the
// user's, so it wins.
func regentConf(s Settings) string {
	listen := s.PodIP
	if s.Loopback {
		listen += ",127.0.0.1"
	}
	set := map[string]string{
		"listen_addresses":        listen,
		"port":                    strconv.Itoa(names.PortPostgres),
		"unix_socket_directories": s.SocketDir,
		"cluster_name":            s.ClusterName,
		// Replication: followers, their slots and pg_rewind.
		"wal_level":             "replica",
		"max_wal_senders":       "20",
		"max_replication_slots": "20",
		"wal_log_hints":         "on",
		"full_page_writes":      "on",
		"hot_standby":           "on",
		// A crashed postmaster stays down: instance reports it and the
		// agent releases the Lease; nothing restarts a leader behind the
		// operator's back.
		"restart_after_crash":       "off",
		"recovery_target_timeline":  "latest",
		"synchronous_standby_names": s.SynchronousStandbyNames,
		"archive_mode":              "off",
	}
	if wl := s.Parameters["wal_level"]; wl == "logical" {
		set["wal_level"] = "logical"
	}
	if _, own := s.Parameters["recovery_init_sync_method"]; !own {
		// After a crash PostgreSQL syncs the data directory before
		// recovery; file by file (fsync) that takes a fifth of a second on
		// a small volume and minutes on a large one, one syncfs per
		// filesystem far less: a restarted leader serves sooner. (The
		// volume holds only this data; Linux reports writeback errors to
		// syncfs since 5.8.)
		set["recovery_init_sync_method"] = "syncfs"
	}
	if s.ArchiveCommand != "" {
		// always: a follower archives what it receives too, so a new
		// leader's archive reaches back before its promotion.
		set["archive_mode"] = "always"
		set["archive_command"] = s.ArchiveCommand
	}
	if s.TLSDir != "" {
		set["ssl"] = "on"
		set["ssl_cert_file"] = filepath.Join(s.TLSDir, "server.crt")
		set["ssl_key_file"] = filepath.Join(s.TLSDir, "server.key")
		set["ssl_min_protocol_version"] = "TLSv1.2"
	}
	if s.RestoreCommand != "" {
		set["restore_command"] = s.RestoreCommand
		if s.PromotingFile != "" {
			set["restore_command"] = "test ! -e " + shellQuote(s.PromotingFile) + " && " + s.RestoreCommand
		}
	}
	if s.Role == RoleFollower {
		set["primary_conninfo"] = s.PrimaryConninfo
		set["primary_slot_name"] = s.PrimarySlotName
	}
	if r := s.Recovery; r != nil {
		// Nobody but instance reaches a database being restored.
		set["listen_addresses"] = ""
		set["restore_command"] = r.RestoreCommand
		set["recovery_target_timeline"] = strconv.FormatInt(r.Timeline, 10)
		set["recovery_target_action"] = "promote"
		switch {
		case r.Target.Time != "":
			set["recovery_target_time"] = r.Target.Time
		case r.Target.LSN != "":
			set["recovery_target_lsn"] = r.Target.LSN
		case r.Target.Name != "":
			set["recovery_target_name"] = r.Target.Name
		}
	}
	var b strings.Builder
	b.WriteString("# Owned by Regent, written by regent instance at every start: edits are lost.\n")
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quote(set[k]))
	}
	return b.String()
}

// postgresqlConf is the main configuration file: the user's settings, then
// Regent's, so that Regent's win.
const postgresqlConf = `# Written by regent instance at every start: edit spec.postgres.parameters instead.
include 'user.conf'
include 'regent.conf'
`

// hbaConf allows replication only through the local socket (the agent's
// relay, which checks the epoch and the peer's certificate) and password
// (SCRAM) logins for remote clients only over TLS.
// recoveryHBAConf lets only the postgres role in, on the local socket,
// without a password: a restored database holds its source's passwords
// until instance sets the new cluster's at the end of the recovery.
const recoveryHBAConf = `# Written by regent instance for a restore: the socket only, the postgres role only.
local     all          postgres                        trust
`

func hbaConf() string {
	return `# Written by regent instance at every start.
# TYPE    DATABASE     USER                 ADDRESS    METHOD
local     replication  ` + names.ReplicationUser + `                 scram-sha-256
local     replication  all                             reject
local     all          all                             scram-sha-256
host      replication  all                  all        reject
hostssl   all          all                  all        scram-sha-256
hostnossl all          all                  all        reject
`
}

// quote renders a configuration value as a single-quoted string.
func quote(v string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", "''") + "'"
}

// shellQuote quotes v for sh, which runs restore_command.
func shellQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }
