package instance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/regent-dev/regent/internal/waitfor"
)

// These tests run real PostgreSQL 15 processes. As root (CI), PostgreSQL
// runs as the machine's postgres user.

// pgConfigBinDir and pgConfigErr are read once, before any test starts
// the instance's zombie reaper: once it runs, it reaps every child this
// process did not register with it, pg_config included.
var pgConfigBinDir, pgConfigErr = func() (string, error) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	return strings.TrimSpace(string(out)), err
}()

func pgBinDir(t *testing.T) string {
	t.Helper()
	if pgConfigErr != nil {
		t.Fatalf("pg_config --bindir: %v (install PostgreSQL 15: hack/deps.sh)", pgConfigErr)
	}
	if _, err := os.Stat(filepath.Join(pgConfigBinDir, "postgres")); err != nil {
		t.Fatalf("no postgres in %s: %v", pgConfigBinDir, err)
	}
	return pgConfigBinDir
}

// credential runs PostgreSQL as the postgres user when the tests run as
// root; otherwise as the test's own user.
func credential(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("tests run as root need a postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

const superPassword = "super-secret-1"
const replPassword = "repl-secret-1"

// newInstance makes a "pod": a data directory, a run directory and a
// loopback address of its own.
func newInstance(t *testing.T, name, ip string) *Instance {
	t.Helper()
	base, err := os.MkdirTemp("", "regent-instance-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	cred := credential(t)
	chown := func(p string) {
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(base, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	chown(run)
	chown(base)
	pw := filepath.Join(base, "superuser-password")
	if err := os.WriteFile(pw, []byte(superPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	chown(pw)
	in := New(Config{
		PGData: filepath.Join(base, "data", "pgdata"), BinDir: pgBinDir(t), Major: "15",
		Settings:              Settings{PodIP: ip, SocketDir: run, ClusterName: name},
		SuperuserPasswordFile: pw, Credential: cred, Log: testr.New(t).WithName(name),
	})
	if err := os.MkdirAll(filepath.Dir(in.cfg.PGData), 0o755); err != nil {
		t.Fatal(err)
	}
	chown(filepath.Dir(in.cfg.PGData))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return in
}

func sql(t *testing.T, in *Instance, query string) {
	t.Helper()
	conn, err := in.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func count(t *testing.T, in *Instance) (int, error) {
	t.Helper()
	conn, err := in.connect(t.Context())
	if err != nil {
		return 0, err
	}
	defer conn.Close(t.Context())
	var n int
	err = conn.QueryRow(t.Context(), "SELECT count(*) FROM t").Scan(&n)
	return n, err
}

func replicationConninfo(in *Instance) string {
	return fmt.Sprintf("host=%s port=5432 user=regent_replication password=%s", in.cfg.SocketDir, replPassword)
}

// startLeader bootstraps a leader with a replication role and a table.
func startLeader(t *testing.T, in *Instance, deadline time.Time) {
	t.Helper()
	if err := in.Initdb(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: deadline}); err != nil {
		t.Fatal(err)
	}
	sql(t, in, "CREATE ROLE regent_replication REPLICATION LOGIN PASSWORD '"+replPassword+"'")
	sql(t, in, "CREATE TABLE t (id serial PRIMARY KEY, v text)")
}

func TestLeaderFollowerAndPromotion(t *testing.T) {
	leader := newInstance(t, "pod-0", "127.0.10.1")
	follower := newInstance(t, "pod-1", "127.0.10.2")
	startLeader(t, leader, time.Now().Add(time.Hour))
	sql(t, leader, "INSERT INTO t (v) VALUES ('before the copy')")

	if err := follower.BaseBackup(t.Context(), replicationConninfo(leader)); err != nil {
		t.Fatal(err)
	}
	if err := follower.Start(t.Context(), StartOptions{Role: RoleFollower, PrimaryConninfo: replicationConninfo(leader)}); err != nil {
		t.Fatal(err)
	}
	sql(t, leader, "INSERT INTO t (v) VALUES ('streamed')")
	waitfor.Condition(t, 10*time.Second, "the follower has both rows", func() error {
		n, err := count(t, follower)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
	st := follower.Status(t.Context())
	if !st.Running || !st.InRecovery || st.ReceivedLSN == 0 || st.ReplayedLSN == 0 {
		t.Errorf("follower status %+v", st)
	}
	lst := leader.Status(t.Context())
	if lst.InRecovery || lst.WriteLSN == 0 || lst.Timeline != 1 || lst.Deadline == nil {
		t.Errorf("leader status %+v", lst)
	}

	// A clean stop reports the final position; the follower has it all.
	final, err := leader.Stop(t.Context(), StopFast)
	if err != nil || final == 0 {
		t.Fatalf("stop: %s, %v", final, err)
	}
	// Promoted for epoch 4 (epochs 2 and 3 went elsewhere, say), it takes
	// timeline 4: a timeline of its own, whatever others promoted.
	start := time.Now()
	if err := follower.Promote(t.Context(), time.Now().Add(time.Hour), 4, ""); err != nil {
		t.Fatal(err)
	}
	sql(t, follower, "INSERT INTO t (v) VALUES ('on the new leader')")
	t.Logf("promotion to first write: %s", time.Since(start).Round(time.Millisecond))
	st = follower.Status(t.Context())
	if st.InRecovery || st.Timeline != 4 || st.Role != RoleLeader {
		t.Errorf("promoted status %+v, want timeline 4", st)
	}
}

func TestWatchdogStopsALeaderWhoseDeadlinePassed(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.3")
	startLeader(t, in, time.Now().Add(time.Hour))
	// The agent refreshes once more, then never again.
	deadline := time.Now().Add(time.Second)
	if err := in.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 10*time.Second, "PostgreSQL stopped", func() error {
		if in.running() {
			return errors.New("still running")
		}
		return nil
	})
	late := time.Since(deadline)
	t.Logf("PostgreSQL stopped %s after the deadline", late.Round(time.Millisecond))
	if late < 0 {
		t.Fatalf("stopped before the deadline")
	}
	st := in.Status(t.Context())
	if st.Running || !strings.Contains(st.Fenced, "did not refresh") {
		t.Errorf("status %+v", st)
	}
	if _, err := count(t, in); err == nil {
		t.Error("a fenced leader still answers queries")
	}
	if err := in.SetDeadline(time.Now().Add(time.Hour)); err == nil {
		t.Error("a deadline was accepted with no leader running")
	}
}

func TestALeaderNeedsADeadline(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.4")
	if err := in.Initdb(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := in.Start(t.Context(), StartOptions{Role: RoleLeader})
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("a leader started without a deadline: %v", err)
	}
}

func TestForeignDataIsRefusedAndKept(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"other major version", map[string]string{"PG_VERSION": "14\n", "global/pg_control": "x"}, "holds PostgreSQL 14 data"},
		{"not a data directory", map[string]string{"notes.txt": "mine"}, "not a PostgreSQL data directory"},
		{"incomplete", map[string]string{"PG_VERSION": "15\n"}, "global/pg_control is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInstance(t, "pod-0", "127.0.10.5")
			for name, content := range tt.files {
				p := filepath.Join(in.cfg.PGData, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for op, err := range map[string]error{
				"initdb":     in.Initdb(t.Context()),
				"basebackup": in.BaseBackup(t.Context(), "host=/nonexistent"),
				"start":      in.Start(t.Context(), StartOptions{Role: RoleFollower}),
			} {
				var foreign *ErrForeignData
				if !errors.As(err, &foreign) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: %v; want a foreign-data error saying %q", op, err, tt.want)
				}
			}
			for name, content := range tt.files {
				b, err := os.ReadFile(filepath.Join(in.cfg.PGData, name))
				if err != nil || string(b) != content {
					t.Errorf("%s changed or gone: %q, %v", name, b, err)
				}
			}
		})
	}
}

// A data directory whose control file is damaged fails to start with
// PostgreSQL's own reason in the error, and nothing in it is touched.
func TestCorruptControlFileFailsClearlyAndIsKept(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.12")
	if err := in.Initdb(t.Context()); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(in.cfg.PGData, "global", "pg_control")
	garbage, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	garbage[40] ^= 0xff // a bit flip past the version fields: the checksum no longer matches
	if err := os.WriteFile(control, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	err = in.Start(t.Context(), StartOptions{Role: RoleFollower})
	if err == nil || !strings.Contains(err.Error(), "control file") {
		t.Fatalf("start on a corrupt control file: %v; want PostgreSQL's reason, naming the control file", err)
	}
	t.Logf("the error: %v", err)
	if b, err := os.ReadFile(control); err != nil || !bytes.Equal(b, garbage) {
		t.Errorf("the control file was changed or removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(in.cfg.PGData, "PG_VERSION")); err != nil {
		t.Errorf("the data directory lost files: %v", err)
	}
}

func TestBaseBackupWithAWrongPasswordFailsClearlyAndLeavesNothing(t *testing.T) {
	leader := newInstance(t, "pod-0", "127.0.10.6")
	follower := newInstance(t, "pod-1", "127.0.10.7")
	startLeader(t, leader, time.Now().Add(time.Hour))
	bad := strings.Replace(replicationConninfo(leader), replPassword, "wrong", 1)
	err := follower.BaseBackup(t.Context(), bad)
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("base backup with a wrong password: %v", err)
	}
	if entries, _ := os.ReadDir(follower.cfg.PGData); len(entries) != 0 {
		t.Errorf("the failed copy left %d entries", len(entries))
	}
}

// A follower's data started as a leader goes through a promotion, so that
// it gets a timeline of its own (a deposed leader's writes on the old
// timeline could otherwise pass for shared history).
func TestFollowerDataStartedAsLeaderGetsANewTimeline(t *testing.T) {
	leader := newInstance(t, "pod-0", "127.0.10.10")
	follower := newInstance(t, "pod-1", "127.0.10.11")
	startLeader(t, leader, time.Now().Add(time.Hour))
	if err := follower.BaseBackup(t.Context(), replicationConninfo(leader)); err != nil {
		t.Fatal(err)
	}
	if err := follower.Start(t.Context(), StartOptions{Role: RoleFollower, PrimaryConninfo: replicationConninfo(leader)}); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.Stop(t.Context(), StopFast); err != nil {
		t.Fatal(err)
	}
	if err := follower.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st := follower.Status(t.Context())
	if st.InRecovery || st.Timeline != 2 || st.Role != RoleLeader {
		t.Errorf("status %+v: want a leader on timeline 2", st)
	}
}

// A parameter PostgreSQL refuses fails the start with PostgreSQL's own
// words, and leaves no log file on the data volume: the log is the
// container's output.
func TestABadParameterFailsTheStartWithPostgreSQLsReason(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.5")
	in.cfg.Parameters = map[string]string{"shared_buffers": "lots"}
	if err := in.Initdb(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := in.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Minute)})
	if err == nil || !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers": "lots"`) {
		t.Fatalf("started with shared_buffers=lots, or failed without saying why: %v", err)
	}
	entries, err := os.ReadDir(filepath.Dir(in.cfg.PGData))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			t.Errorf("a log file on the data volume: %s", e.Name())
		}
	}
}

func TestLogTailKeepsTheLastLinesBounded(t *testing.T) {
	var out strings.Builder
	tail := newLogTail(&out, 3)
	for i := range 5 {
		fmt.Fprintf(tail, "line %d\n", i)
	}
	_, _ = tail.Write([]byte(strings.Repeat("x", 2*maxLine)))
	got := tail.lines()
	if len(got) != 3 || got[0] != "line 3" || got[1] != "line 4" || len(got[2]) != maxLine {
		t.Errorf("kept %d lines: %q…", len(got), got[:min(2, len(got))])
	}
	if !strings.HasPrefix(out.String(), "line 0\nline 1\n") || out.Len() != 5*len("line 0\n")+2*maxLine {
		t.Errorf("passed through %d bytes, want every byte", out.Len())
	}
}

// A postmaster killed with its container leaves postmaster.pid behind, and
// the PID in it may still be taken (a zombie not yet reaped, or another
// program since): the next start must not be refused for it. A live
// postgres keeps its lock file.
func TestAStaleLockFileDoesNotStopTheNextStart(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.9")
	startLeader(t, in, time.Now().Add(time.Hour))
	if removed, err := removeStaleLockFiles(in.lockFiles()...); err != nil || len(removed) > 0 {
		t.Fatalf("the running postmaster's lock files: removed %v, %v; want them kept", removed, err)
	}
	if _, err := in.Stop(t.Context(), StopFast); err != nil {
		t.Fatal(err)
	}
	// Another program of PostgreSQL's user (PostgreSQL ignores other
	// users' processes) holds the PID the lock file names.
	other := exec.Command("sleep", "60")
	other.SysProcAttr = &syscall.SysProcAttr{Credential: credential(t)}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	for _, lock := range in.lockFiles() {
		if err := os.WriteFile(lock, []byte(strconv.Itoa(other.Process.Pid)+"\n"+in.cfg.PGData+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if cred := credential(t); cred != nil {
			if err := os.Chown(lock, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := in.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("start with a stale lock file: %v", err)
	}
	if n, err := count(t, in); err != nil || n != 0 {
		t.Errorf("after the start: %d rows, %v", n, err)
	}
}

func TestLivePostgresIsNotFooledByZombiesOrOtherPrograms(t *testing.T) {
	// A zombie of a parent that never waits (sleep, after its shell's
	// exec): nothing in this process can reap it.
	parent := exec.Command("sh", "-c", "sleep 0.01 & exec sleep 60")
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = parent.Process.Kill(); _ = parent.Wait() }()
	var zombie int
	waitfor.Condition(t, 5*time.Second, "a zombie", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent.Process.Pid, parent.Process.Pid))
		if err != nil {
			return err
		}
		if zombie, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return fmt.Errorf("children %q", b)
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", zombie))
		if err != nil || !strings.Contains(string(stat), ") Z ") {
			return fmt.Errorf("stat %q: %w", stat, err)
		}
		return nil
	})
	for name, pid := range map[string]int{"a zombie": zombie, "another program": os.Getpid(), "no process": 1 << 30} {
		if livePostgres(pid) {
			t.Errorf("%s taken for a live postgres", name)
		}
	}
}

// The cluster's system identifier, once recorded, is checked before
// PostgreSQL starts: another database's data is refused with a clear
// error and kept.
func TestDataOfAnotherDatabaseIsNeverStarted(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.10")
	startLeader(t, in, time.Now().Add(time.Hour))
	st := in.Status(t.Context())
	if len(st.SystemIdentifier) < 10 {
		t.Fatalf("a running leader reports system identifier %q", st.SystemIdentifier)
	}
	if _, err := in.Stop(t.Context(), StopFast); err != nil {
		t.Fatal(err)
	}
	if stopped := in.Status(t.Context()); stopped.SystemIdentifier != st.SystemIdentifier {
		t.Errorf("stopped, it reports %q; running it reported %q", stopped.SystemIdentifier, st.SystemIdentifier)
	}
	err := in.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Hour), SystemIdentifier: "7000000000000000001"})
	var foreign *ErrForeignData
	if !errors.As(err, &foreign) || !strings.Contains(err.Error(), "another database's data") {
		t.Fatalf("start of another database's data: %v", err)
	}
	if in.running() {
		t.Fatal("PostgreSQL runs on another database's data")
	}
	if err := in.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Hour), SystemIdentifier: st.SystemIdentifier}); err != nil {
		t.Fatalf("start of the cluster's own data: %v", err)
	}
}
