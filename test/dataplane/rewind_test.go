package dataplane_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
)

func hasRow(t *testing.T, p *pod, v string) (bool, error) {
	t.Helper()
	c, err := p.conn(t.Context())
	if err != nil {
		return false, err
	}
	defer c.Close(t.Context())
	var n int
	err = c.QueryRow(t.Context(), "SELECT count(*) FROM t WHERE v = $1", v).Scan(&n)
	return n > 0, err
}

// A deposed leader that wrote after the fork rejoins as a follower through
// pg_rewind, and its divergent rows are gone from it.
//
// The divergent write is made possible on purpose: with its agent frozen,
// the old leader keeps serving until its watchdog deadline and nothing it
// writes reaches the followers. (In Async mode without the commit gate,
// such a write is acknowledged; the commit gate of a later change closes
// that window. Here the point is the rejoin.)
func TestDeposedLeaderIsRewound(t *testing.T) {
	deposeAndRejoin(t, "127.0.34", nil)
}

// The same, when the deposed leader's data needs crash recovery (its
// watchdog stopped it with an immediate shutdown) and carries a follower's
// standby.signal, as a failed start as a follower leaves it: pg_rewind's
// own crash recovery runs PostgreSQL in single-user mode, which refuses
// standby mode, so the rewind must put the standby settings out of its way
// (found in 1 of 8 end-to-end Sync freezes, which then needed a person).
func TestACrashedDeposedLeaderWithStandbySettingsIsRewound(t *testing.T) {
	deposeAndRejoin(t, "127.0.58", func(old *pod) {
		if err := os.WriteFile(filepath.Join(old.logDir, "data", "pgdata", "standby.signal"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
}

// A deposed leader whose rewind cannot succeed (here its WAL back to the
// fork is gone) is cloned again by itself after three failed attempts,
// instead of waiting for a person to remove its data.
func TestADeposedLeaderThatCannotBeRewoundIsClonedAgain(t *testing.T) {
	var old *pod
	deposeAndRejoin(t, "127.0.60", func(p *pod) {
		old = p
		walDir := filepath.Join(p.logDir, "data", "pgdata", "pg_wal")
		entries, err := os.ReadDir(walDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if len(e.Name()) == 24 {
				if err := os.Remove(filepath.Join(walDir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	log, _ := os.ReadFile(filepath.Join(old.logDir, "agent.log"))
	if !strings.Contains(string(log), "Cloning the leader again") || !strings.Contains(string(log), "pg_rewind failed 3 times in a row") {
		t.Fatalf("the deposed leader rejoined without being cloned again for its failed rewinds")
	}
}

// deposeAndRejoin makes the leader of a two-pod cluster write a row its
// follower never gets, moves leadership, lets beforeThaw change the old
// leader's data while its agent is stopped, and checks that it rejoins
// without the divergent row.
func deposeAndRejoin(t *testing.T, subnet string, beforeThaw func(old *pod)) {
	t.Helper()
	c := newCluster(t, 2, subnet)
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	old, next := c.pods[0], c.pods[1]
	ctx := t.Context()
	if err := exec1(ctx, old, "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('shared')"); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 20*time.Second, "shared row replicated", func() error {
		ok, err := hasRow(t, next, "shared")
		if err == nil && !ok {
			err = fmt.Errorf("not yet")
		}
		return err
	})

	if err := syscall.Kill(old.agentPid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = syscall.Kill(old.agentPid(), syscall.SIGCONT)
		}
	})
	if err := exec1(ctx, old, "INSERT INTO t (v) VALUES ('divergent')"); err != nil {
		t.Fatalf("the old leader refused the write before its deadline: %v", err)
	}
	c.moveLeadership(t, "db-0", "db-1", 2)
	waitfor.Condition(t, 30*time.Second, "the new leader writes", func() error {
		return exec1(ctx, next, "INSERT INTO t (v) VALUES ('after the fork')")
	})
	waitfor.Condition(t, 15*time.Second, "the old leader fenced by its watchdog", func() error {
		if err := exec1(ctx, old, "SELECT 1"); err == nil {
			return fmt.Errorf("still serving")
		}
		return nil
	})
	if beforeThaw != nil {
		beforeThaw(old)
	}
	if err := syscall.Kill(old.agentPid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true

	waitfor.Condition(t, 90*time.Second, "the old leader follows the new one", old.ready)
	waitfor.Condition(t, 20*time.Second, "the old leader has the new leader's row", func() error {
		ok, err := hasRow(t, old, "after the fork")
		if err == nil && !ok {
			err = fmt.Errorf("not yet")
		}
		return err
	})
	if ok, err := hasRow(t, old, "divergent"); err != nil || ok {
		t.Errorf("the divergent row is still on the old leader (%v, %v)", ok, err)
	}
	if ok, err := hasRow(t, next, "divergent"); err != nil || ok {
		t.Errorf("the divergent row reached the new leader (%v, %v)", ok, err)
	}
}
