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
	// PodIP is the only address PostgreSQL listens on (besides its socket).
	PodIP string
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
	set := map[string]string{
		"listen_addresses":        s.PodIP,
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
	}
	if s.Role == RoleFollower {
		set["primary_conninfo"] = s.PrimaryConninfo
		set["primary_slot_name"] = s.PrimarySlotName
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
