package dataplane_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
)

// A follower that was down while its leader recycled the WAL it still
// needed (its slot lost, as after a failover to a leader that never had
// it) catches up from the leader's archive, through wal-fetch and both
// agents, then streams again.
func TestFollowerBeyondRetainedWALCatchesUpFromTheArchive(t *testing.T) {
	leader, follower, needed := followerBeyondRetainedWAL(t, "127.0.38", false)
	log, _ := os.ReadFile(filepath.Join(follower.logDir, "agent.log"))
	if !strings.Contains(string(log), "Fetched archived WAL from the leader") || !strings.Contains(string(log), needed) {
		t.Fatalf("the follower did not catch up through the archive (no fetch of %s in its agent's log)", needed)
	}
	if strings.Contains(string(log), "Cloning the leader again") {
		t.Fatalf("the follower was cloned again although the archive had what it needed")
	}
	sameRows(t, leader, follower)
}

// When the archive has lost the segment too (it keeps a bounded number),
// nothing can bring the follower's data up to date: it is cloned again by
// itself, and streams (before, it retried for good).
func TestFollowerBeyondRetainedWALAndTheArchiveIsClonedAgain(t *testing.T) {
	leader, follower, needed := followerBeyondRetainedWAL(t, "127.0.59", true)
	log, _ := os.ReadFile(filepath.Join(follower.logDir, "agent.log"))
	if !strings.Contains(string(log), "Cloning the leader again") || !strings.Contains(string(log), needed) {
		t.Fatalf("the follower was not cloned again for segment %s (agent log has no such line)", needed)
	}
	sameRows(t, leader, follower)
}

// followerBeyondRetainedWAL stops the follower of a two-pod cluster, drops
// its slot, writes until the leader recycled the segment the follower
// needs (and removes it from the leader's archive too if pruneArchive),
// then restarts the follower and waits until it has the leader's last row
// and streams. It returns the pods and the segment's name.
func followerBeyondRetainedWAL(t *testing.T, subnet string, pruneArchive bool) (leader, follower *pod, needed string) {
	t.Helper()
	c := newCluster(t, 2, subnet)
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower = c.pods[0], c.pods[1]
	ctx := t.Context()
	if err := exec1(ctx, leader, "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 20*time.Second, "first row replicated", func() error {
		ok, err := hasRow(t, follower, "before")
		if err == nil && !ok {
			err = fmt.Errorf("not yet")
		}
		return err
	})
	conn, err := leader.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&needed); err != nil {
		t.Fatal(err)
	}

	follower.kill()
	waitfor.Condition(t, 20*time.Second, "the follower's slot dropped", func() error {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'db_1'")
		if err != nil {
			return err
		}
		var n int
		return conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&n)
	})
	// More segments than wal_keep_size (128 MB) keeps, each with a row.
	for i := range 12 {
		if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO t (v) VALUES ('gap %d'); SELECT pg_switch_wal()", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.Condition(t, 60*time.Second, "segment "+needed+" recycled by the leader", func() error {
		if _, err := conn.Exec(ctx, "INSERT INTO t (v) VALUES ('after'); CHECKPOINT"); err != nil {
			return err
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_ls_waldir() WHERE name = $1", needed).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("still in pg_wal")
		}
		return nil
	})
	archive := filepath.Join(leader.logDir, "data", "wal-archive")
	if _, err := os.Stat(filepath.Join(archive, needed)); err != nil {
		t.Fatalf("the leader did not archive %s: %v", needed, err)
	}
	if pruneArchive {
		// As the archive's bound would: every segment up to the needed one.
		entries, _ := os.ReadDir(archive)
		for _, e := range entries {
			if len(e.Name()) == 24 && e.Name()[8:] <= needed[8:] {
				if err := os.Remove(filepath.Join(archive, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	follower.restart(t)
	waitfor.Condition(t, 90*time.Second, "the follower has the leader's last row", func() error {
		ok, err := hasRow(t, follower, "after")
		if err == nil && !ok {
			err = fmt.Errorf("not yet")
		}
		return err
	})
	waitfor.Condition(t, 30*time.Second, "the follower streams again", follower.ready)
	return leader, follower, needed
}

// sameRows fails unless the follower has as many rows as the leader.
func sameRows(t *testing.T, leader, follower *pod) {
	t.Helper()
	ctx := t.Context()
	n, err := countRows(ctx, follower)
	if err != nil {
		t.Fatal(err)
	}
	want, err := countRows(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("follower has %d rows, leader %d", n, want)
	}
}
