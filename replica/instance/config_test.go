package instance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRegentConfWinsAndFollowsTheRole(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		want    []string
		notWant []string
	}{
		{
			name: "leader",
			s:    Settings{PodIP: "10.244.1.1", SocketDir: "/regent/run", ClusterName: "pg-0", Role: RoleLeader},
			want: []string{"listen_addresses = '10.244.1.1'", "port = '5432'", "unix_socket_directories = '/regent/run'",
				"wal_log_hints = 'on'", "restart_after_crash = 'off'", "recovery_target_timeline = 'latest'",
				"synchronous_standby_names = ''", "archive_mode = 'off'"},
			notWant: []string{"primary_conninfo"},
		},
		{
			name: "the pod's own loopback too, for kubectl port-forward",
			s:    Settings{PodIP: "10.244.1.1", Loopback: true, Role: RoleLeader},
			want: []string{"listen_addresses = '10.244.1.1,127.0.0.1'"},
		},
		{
			name: "follower streams through the agent",
			s: Settings{PodIP: "10.244.1.2", SocketDir: "/regent/run", Role: RoleFollower,
				PrimaryConninfo: "host=/regent/run port=5433 user=regent_replication", PrimarySlotName: "pg_1"},
			want: []string{"primary_conninfo = 'host=/regent/run port=5433 user=regent_replication'", "primary_slot_name = 'pg_1'"},
		},
		{
			name: "sync standbys and archiving",
			s: Settings{Role: RoleLeader, SynchronousStandbyNames: `ANY 1 ("pg_1", "pg_2")`,
				ArchiveCommand: "/regent/bin/regent wal-push %p"},
			want: []string{`synchronous_standby_names = 'ANY 1 ("pg_1", "pg_2")'`, "archive_mode = 'always'",
				"archive_command = '/regent/bin/regent wal-push %p'"},
		},
		{
			name: "TLS once the pod has its certificate",
			s:    Settings{TLSDir: "/regent/run/tls"},
			want: []string{"ssl = 'on'", "ssl_cert_file = '/regent/run/tls/server.crt'", "ssl_key_file = '/regent/run/tls/server.key'"},
		},
		{
			name:    "no TLS before it",
			s:       Settings{},
			notWant: []string{"ssl"},
		},
		{
			name: "logical decoding is the user's choice",
			s:    Settings{Parameters: map[string]string{"wal_level": "logical"}},
			want: []string{"wal_level = 'logical'"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := regentConf(tt.s)
			for _, w := range tt.want {
				if !strings.Contains(conf, w+"\n") {
					t.Errorf("missing %q in\n%s", w, conf)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(conf, w) {
					t.Errorf("unexpected %q in\n%s", w, conf)
				}
			}
		})
	}
}

func TestUserConfSkipsOwnedParametersAndQuotes(t *testing.T) {
	conf, ignored := userConf(StorageBudget{}, map[string]string{
		"work_mem": "8MB", "port": "6000", "search_path": `"$user", public`, "application_name": "it's",
	})
	if len(ignored) != 1 || ignored[0] != "port" {
		t.Errorf("ignored %v, want [port]", ignored)
	}
	for _, w := range []string{"work_mem = '8MB'\n", `search_path = '"$user", public'` + "\n", "application_name = 'it''s'\n"} {
		if !strings.Contains(conf, w) {
			t.Errorf("missing %q in\n%s", w, conf)
		}
	}
	if strings.Contains(conf, "port") {
		t.Errorf("an owned parameter was written:\n%s", conf)
	}
}

// PostgreSQL decides by the first pg_hba.conf line that matches: over the
// network, replication is refused whatever the encryption, and clients
// log in with SCRAM over TLS only.
func TestHBAAllowsReplicationOnlyLocallyAndClientsOnlyOverTLS(t *testing.T) {
	hba := hbaConf()
	// method is the method of the first line matching a connection of
	// this kind (local: over the socket) to database db.
	method := func(local, ssl bool, db string) string {
		for _, l := range strings.Split(hba, "\n") {
			f := strings.Fields(l)
			if len(f) < 4 || strings.HasPrefix(f[0], "#") {
				continue
			}
			kind := f[0] == "host" || f[0] == "hostssl" && ssl || f[0] == "hostnossl" && !ssl
			if local {
				kind = f[0] == "local"
			}
			// "all" matches every database but not replication.
			if kind && (f[1] == db || f[1] == "all" && db != "replication") {
				return f[len(f)-1]
			}
		}
		return "none"
	}
	for _, tc := range []struct {
		local, ssl bool
		db, want   string
	}{
		{false, true, "replication", "reject"},
		{false, false, "replication", "reject"},
		{false, true, "app", "scram-sha-256"},
		{false, false, "app", "reject"},
		{true, false, "app", "scram-sha-256"},
		{true, false, "replication", "scram-sha-256"},
	} {
		if got := method(tc.local, tc.ssl, tc.db); got != tc.want {
			t.Errorf("local=%v ssl=%v database %s: %s, want %s\n%s", tc.local, tc.ssl, tc.db, got, tc.want, hba)
		}
	}
	if strings.Contains(hba, "trust") {
		t.Errorf("trust authentication:\n%s", hba)
	}
}

func TestPasswordsStayOutOfLogs(t *testing.T) {
	for in, want := range map[string]string{
		"--dbname=host=/run port=5433 user=r password='se cr\\'et' application_name=x": "--dbname=host=/run port=5433 user=r password=REDACTED application_name=x",
		"--source-server=host=/run password=plain user=postgres":                       "--source-server=host=/run password=REDACTED user=postgres",
		"no secret here": "no secret here",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// While the promoting file exists, restore_command finds nothing at once
// (exit status 1, the command not run); without it the command runs. The
// file's path is quoted for the shell that runs restore_command.
func TestRestoreCommandFindsNothingWhilePromoting(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "it's promoting")
	ran := filepath.Join(dir, "ran")
	conf := regentConf(Settings{Role: RoleFollower, RestoreCommand: "touch " + shellQuote(ran), PromotingFile: flag})
	var command string
	for line := range strings.Lines(conf) {
		if v, ok := strings.CutPrefix(line, "restore_command = "); ok {
			v = strings.TrimSpace(v)
			command = strings.NewReplacer(`\\`, `\`, "''", "'").Replace(v[1 : len(v)-1])
		}
	}
	if command == "" {
		t.Fatalf("no restore_command in\n%s", conf)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("sh", "-c", command).Run(); err == nil {
		t.Errorf("%s succeeded while promoting", command)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Errorf("%s ran the command while promoting", command)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("sh", "-c", command).Run(); err != nil {
		t.Errorf("%s: %v", command, err)
	}
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("%s did not run the command: %v", command, err)
	}
}
