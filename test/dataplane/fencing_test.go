package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
	"github.com/regent-dev/regent/internal/waitfor"
)

// agentPid is the pid of a pod's agent process.
func (p *pod) agentPid() int { return p.procs[1].Process.Pid }

// writable reports whether the pod's PostgreSQL accepts a write now.
func writable(t *testing.T, p *pod) error {
	t.Helper()
	return exec1(t.Context(), p, "INSERT INTO t (v) VALUES ('probe')")
}

func startLeaderOnly(t *testing.T, ipBase string, opts ...clusterOption) *cluster {
	t.Helper()
	c := newCluster(t, 1, ipBase, opts...)
	waitfor.Condition(t, 90*time.Second, "leader ready", c.pods[0].ready)
	if err := exec1(t.Context(), c.pods[0], "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A frozen agent cannot renew: the instance watchdog stops PostgreSQL at
// the renew deadline, before the lease (6s here) could expire.
func TestFrozenAgentIsFencedByTheWatchdog(t *testing.T) {
	c := startLeaderOnly(t, "127.0.31")
	leader := c.pods[0]
	if err := syscall.Kill(leader.agentPid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	t.Cleanup(func() { _ = syscall.Kill(leader.agentPid(), syscall.SIGCONT) })
	waitfor.Condition(t, 10*time.Second, "writes refused", func() error {
		if err := writable(t, leader); err == nil {
			return fmt.Errorf("still accepts writes")
		}
		return nil
	})
	took := time.Since(frozen)
	t.Logf("writes stopped %s after the agent froze (lease 6s, renew deadline 4s)", took.Round(time.Millisecond))
	if took >= 6*time.Second {
		t.Errorf("writes stopped only after %s, not before the lease duration", took)
	}
}

// A leader whose Lease is taken stops accepting writes at once, well
// before the lease duration.
func TestLeaderWhoseLeaseIsTakenStopsWriting(t *testing.T) {
	c := startLeaderOnly(t, "127.0.32")
	leader := c.pods[0]
	c.updateLease(t, func(lease *coordinationv1.Lease) {
		lease.Spec.HolderIdentity, lease.Spec.LeaseTransitions = ptr.To("db-9"), ptr.To[int32](2)
	})
	taken := time.Now()
	waitfor.Condition(t, 10*time.Second, "writes refused", func() error {
		if err := writable(t, leader); err == nil {
			return fmt.Errorf("still accepts writes")
		}
		return nil
	})
	took := time.Since(taken)
	t.Logf("writes stopped %s after the Lease moved", took.Round(time.Millisecond))
	if took >= 6*time.Second {
		t.Errorf("writes stopped only after %s", took)
	}
	st, err := leader.status()
	if err != nil || !st.Fenced {
		t.Errorf("status after losing the Lease: %+v, %v", st, err)
	}
}

// Only members reach the data. The relay's leader end accepts a member of
// its cluster, by its certificate, at the epoch its agent leads; a
// stranger without a certificate, one with another cluster's, a member
// naming another pod, a peer claiming another epoch, a follower's relay
// port and a made-up name are refused, and no one logs in to PostgreSQL
// without TLS.
func TestOnlyMembersReachTheData(t *testing.T) {
	c := newCluster(t, 2, "127.0.33")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	member := func(ca *pki.CA, pod string) []tls.Certificate {
		certPEM, keyPEM, err := ca.Issue(pki.Member{Pod: pod}, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{pair}
	}
	otherCA := &cluster{}
	otherCA.newCA(t)
	handshake := func(p *pod, cert []tls.Certificate, hello string) string {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort(p.ip, "5433"),
			&tls.Config{Certificates: cert, RootCAs: p.roots, ServerName: p.name, MinVersion: tls.VersionTLS13})
		if err != nil {
			return "dial: " + err.Error()
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintln(conn, hello)
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return "refused: " + err.Error()
		}
		return strings.TrimSpace(line)
	}
	db1 := member(c.ca, "db-1")
	if got := handshake(leader, db1, "REGENT-RELAY/1 epoch=1 pod=db-1"); got != "OK" {
		t.Errorf("the leader refused a member at its own epoch: %q", got)
	}
	for _, tc := range []struct {
		name  string
		p     *pod
		cert  []tls.Certificate
		hello string
	}{
		{"a stranger without a certificate", leader, nil, "REGENT-RELAY/1 epoch=1 pod=db-1"},
		{"a stranger after WAL", leader, nil, "REGENT-WAL/1 epoch=1 pod=db-1 file=000000010000000000000001"},
		{"another cluster's certificate", leader, member(otherCA.ca, "db-1"), "REGENT-RELAY/1 epoch=1 pod=db-1"},
		{"a member naming another pod", leader, db1, "REGENT-RELAY/1 epoch=1 pod=db-2"},
		{"a later epoch", leader, db1, "REGENT-RELAY/1 epoch=2 pod=db-1"},
		{"an earlier epoch", leader, db1, "REGENT-RELAY/1 epoch=0 pod=db-1"},
		{"a follower's relay", follower, member(c.ca, "db-0"), "REGENT-RELAY/1 epoch=1 pod=db-0"},
		{"a made-up slot", leader, member(c.ca, "intruder"), "REGENT-RELAY/1 epoch=1 pod=intruder"},
	} {
		if got := handshake(tc.p, tc.cert, tc.hello); got == "OK" || strings.HasPrefix(got, "OK ") {
			t.Errorf("%s: the relay at %s accepted %q: %q", tc.name, tc.p.name, tc.hello, got)
		}
	}
	// No slot was made for anyone but the members.
	conn, err := leader.conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var slots []string
	rows, _ := conn.Query(t.Context(), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
	if slots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		// The commit gate's temporary slot is named after its session.
		if s != names.Slot("db-1") && !strings.HasPrefix(s, names.CommitGate+"_") {
			t.Errorf("the leader has a slot %q for no member (slots: %v)", s, slots)
		}
	}
	// PostgreSQL: no login without TLS, even with the right password.
	plain, err := pgx.Connect(t.Context(), fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=app "+
		"connect_timeout=3 sslmode=disable", leader.ip, superPW))
	if err == nil {
		_ = plain.Close(t.Context())
		t.Error("PostgreSQL let a client in without TLS")
	} else if !strings.Contains(err.Error(), "no encryption") {
		t.Errorf("a login without TLS failed for another reason: %v", err)
	}
	// The refusals are counted by reason.
	resp, err := leader.https().Get(leader.agentURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, reason := range []string{"Certificate", "CertificateMismatch", "NotTheLeader"} {
		if !strings.Contains(string(body), fmt.Sprintf("regent_agent_relay_refused_total{reason=%q}", reason)) {
			t.Errorf("no refusal counted for %s", reason)
		}
	}
}

// PostgreSQL dying under a leader makes its agent release the Lease at
// once, so that a failover need not wait for the lease to expire.
func TestLeaderReleasesTheLeaseWhenPostgreSQLDies(t *testing.T) {
	c := startLeaderOnly(t, "127.0.35")
	leader := c.pods[0]
	pgdata := filepath.Join(leader.logDir, "data", "pgdata")
	if out, err := exec.Command("pkill", "-KILL", "-f", "postgres -D "+pgdata).CombinedOutput(); err != nil {
		t.Fatalf("kill postgres: %v %s", err, out)
	}
	killed := time.Now()
	waitfor.Condition(t, 10*time.Second, "Lease released", func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(t.Context(), names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.HolderIdentity != nil {
			return fmt.Errorf("still held by %s", *lease.Spec.HolderIdentity)
		}
		if by := leadership.Of(lease).ReleasedBy; by != "db-0" {
			return fmt.Errorf("released by %q, not by db-0's agent", by)
		}
		return nil
	})
	t.Logf("Lease released %s after PostgreSQL was killed", time.Since(killed).Round(time.Millisecond))
}

// Sealing: a follower that sees its epoch sealed cuts its relay and reports
// the last position it received.
func TestFollowerSealsTheEpoch(t *testing.T) {
	c := newCluster(t, 2, "127.0.36")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	if err := exec1(ctx, c.pods[0], "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('x')"); err != nil {
		t.Fatal(err)
	}
	var flushed lsn.LSN
	conn, err := c.pods[0].conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flushed); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	follower := c.pods[1]
	waitfor.Condition(t, 10*time.Second, "the follower replayed the leader's last write", func() error {
		st, err := follower.status()
		if err == nil && st.ReplayedLSN < flushed {
			err = fmt.Errorf("replayed %s, leader flushed %s", st.ReplayedLSN, flushed)
		}
		return err
	})
	c.updateProtocol(t, func(s *leadership.State) { s.SealedEpoch = 1 })
	var sealedLSN lsn.LSN
	waitfor.Condition(t, 10*time.Second, "follower sealed", func() error {
		st, err := follower.status()
		if err != nil {
			return err
		}
		if !st.Sealed || st.SealedLSN == 0 {
			return fmt.Errorf("status %+v", st)
		}
		sealedLSN = st.SealedLSN
		return nil
	})
	// The sealed position covers everything the follower held (the WAL
	// receiver's restart resets pg_last_wal_receive_lsn to a segment
	// start: the seal must not report that).
	if sealedLSN < flushed {
		t.Fatalf("sealed at %s, below the %s the follower had replayed", sealedLSN, flushed)
	}
	// The sealed epoch's leader is fenced; nothing more reaches the
	// follower, whose position stays where it sealed.
	waitfor.Condition(t, 10*time.Second, "sealed leader stops writing", func() error {
		if err := writable(t, c.pods[0]); err == nil {
			return fmt.Errorf("the leader of a sealed epoch still accepts writes")
		}
		return nil
	})
	st, err := follower.status()
	if err != nil || st.ReplayedLSN > sealedLSN || st.ReceivedLSN > sealedLSN || st.SealedLSN != sealedLSN {
		t.Errorf("after sealing at %s: received %s, replayed %s, sealed %s (%v)", sealedLSN, st.ReceivedLSN, st.ReplayedLSN, st.SealedLSN, err)
	}
}

// With the Lease naming a synchronous standby, a commit on the leader is
// acknowledged only once that follower has it: while the follower's agent
// is frozen (its relay carries nothing), the commit waits.
func TestSyncStandbyNamesFromTheLease(t *testing.T) {
	c := newCluster(t, 2, "127.0.37")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	if err := exec1(t.Context(), leader, "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	c.updateProtocol(t, func(s *leadership.State) { s.Standbys = leadership.AnyOf(1, []string{"db-1"}) })
	waitfor.Condition(t, 15*time.Second, "leader runs with the synchronous standby", func() error {
		cn, err := leader.conn(t.Context())
		if err != nil {
			return err
		}
		defer cn.Close(t.Context())
		var v string
		if err := cn.QueryRow(t.Context(), "SHOW synchronous_standby_names").Scan(&v); err != nil {
			return err
		}
		if v != `ANY 1 ("db_1")` {
			return fmt.Errorf("synchronous_standby_names = %q", v)
		}
		return nil
	})
	if err := exec1(t.Context(), leader, "INSERT INTO t (v) VALUES ('acknowledged by db-1')"); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(follower.agentPid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = syscall.Kill(follower.agentPid(), syscall.SIGCONT)
		}
	})
	done := make(chan error, 1)
	go func() { done <- exec1(context.Background(), leader, "INSERT INTO t (v) VALUES ('waits')") }()
	select {
	case err := <-done:
		t.Fatalf("a commit was acknowledged while its only synchronous standby was cut off (%v)", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if err := syscall.Kill(follower.agentPid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the commit failed after the standby came back: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the commit was not acknowledged after the standby came back")
	}
}

// A first leader whose initdb outlasts the renew deadline and a pass (a
// loaded node, a slow disk) comes up in one go: initdb is not cut short,
// the agent keeps renewing meanwhile, and PostgreSQL starts with the
// deadline of the latest renewal, not one that is about to pass (the
// watchdog would stop it at once, and the agent would give the Lease up).
func TestFirstLeaderComesUpAfterASlowInitdb(t *testing.T) {
	// Longer than the renew deadline (4s of a 6s lease) and than a pass.
	slow := wrappedPGBinDir(t, "initdb", "sleep 7\nexec {real} \"$@\"")
	c := startLeaderOnly(t, "127.0.42", withPGBinDir(slow))
	leader := c.pods[0]
	if err := writable(t, leader); err != nil {
		t.Fatalf("the first leader does not accept writes: %v", err)
	}
	lease, err := cs.CoordinationV1().Leases(c.ns).Get(t.Context(), names.Lease("db"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "db-0" || *lease.Spec.LeaseTransitions != 1 {
		t.Errorf("Lease after the bootstrap: holder %q epoch %d, want db-0 at epoch 1", h, *lease.Spec.LeaseTransitions)
	}
	agentLog, _ := os.ReadFile(filepath.Join(leader.logDir, "agent.log"))
	instanceLog, _ := os.ReadFile(filepath.Join(leader.logDir, "instance.log"))
	if n := strings.Count(string(instanceLog), `"msg":"Running","tool":"initdb"`); n != 1 {
		t.Errorf("initdb ran %d times, want once", n)
	}
	if n := strings.Count(string(instanceLog), `"msg":"Started PostgreSQL"`); n != 1 {
		t.Errorf("PostgreSQL started %d times, want once (the watchdog stopped it?)", n)
	}
	if strings.Contains(string(agentLog), "initdb") && strings.Contains(string(agentLog), `"error":"initdb`) {
		t.Errorf("a bootstrap pass failed on initdb: see the agent's log")
	}
}

// wrappedPGBinDir is a directory of the host's PostgreSQL tools in which
// tool runs script instead ({real} in it is the real tool's path).
func wrappedPGBinDir(t *testing.T, tool, script string) string {
	t.Helper()
	// Outside t.TempDir(), whose parent only root may enter: the tools
	// run as postgres.
	dir, err := os.MkdirTemp("", "regent-wrapped-"+tool+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	realBin := pgBinDir(t)
	entries, err := os.ReadDir(realBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == tool {
			continue
		}
		if err := os.Symlink(filepath.Join(realBin, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	body := "#!/bin/sh\n" + strings.ReplaceAll(script, "{real}", filepath.Join(realBin, tool)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, tool), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A follower's clone that takes longer than the renew deadline (4 s of a
// 6 s lease) is not cut by its own relay: the relay forwards only while
// the agent has recently read the Lease, and the agent keeps reading it
// while the long step holds its pass. (Cut, the clone starts over on every
// pass and never ends; a rewind cut half-way leaves a data directory that
// needs a fresh clone.)
func TestSlowCloneIsNotCutByTheRelay(t *testing.T) {
	// The leader sends the backup at 4 MB/s: the ~40 MB of a new cluster
	// take about ten seconds.
	slow := wrappedPGBinDir(t, "pg_basebackup", "exec {real} --max-rate=4M \"$@\"")
	c := newCluster(t, 2, "127.0.45", withPGBinDir(slow))
	waitfor.Condition(t, 90*time.Second, "leader ready", c.pods[0].ready)
	waitfor.Condition(t, 2*time.Minute, "follower cloned and streaming", c.pods[1].ready)
	instanceLog, _ := os.ReadFile(filepath.Join(c.pods[1].logDir, "instance.log"))
	// Attempts before the leader created the replication role fail at
	// once; one cut by the relay fails after copying for a while.
	var took string
	cut := 0
	for line := range strings.Lines(string(instanceLog)) {
		if !strings.Contains(line, `"tool":"pg_basebackup"`) || !strings.Contains(line, `"msg":"Ran"`) {
			continue
		}
		_, after, _ := strings.Cut(line, `"duration":"`)
		d, _, _ := strings.Cut(after, `"`)
		if strings.Contains(line, `"ok":true`) {
			took = d
		} else if dd, err := time.ParseDuration(d); err == nil && dd > time.Second {
			cut++
		}
	}
	t.Logf("the clone took %s; %d attempt(s) cut after more than a second", took, cut)
	if cut != 0 {
		t.Errorf("%d clone(s) cut mid-copy", cut)
	}
	if d, err := time.ParseDuration(took); err != nil || d < 4*time.Second {
		t.Errorf("the clone took %q: not longer than the renew deadline, so this test shows nothing", took)
	}
}
