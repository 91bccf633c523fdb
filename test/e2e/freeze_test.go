package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/test/ledger"
)

// frozenLeader is a leader pod frozen by the test, with clients of its own
// that write to its address, on kept connections and on new ones.
type frozenLeader struct {
	namespace, pod string
	frozenAt       time.Time
	acks           chan ledger.Ack
	acked          []ledger.Ack
	stop           context.CancelFunc
	writers        sync.WaitGroup
	thawed         bool
}

// freezeLeader starts three clients writing to pod directly (as clients
// that kept its address would), waits until they are acknowledged, and
// freezes the pod's containers through their cgroups.
func freezeLeader(t testing.TB, namespace, pod, password string) *frozenLeader {
	t.Helper()
	p, err := cs.CoreV1().Pods(namespace).Get(t.Context(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &frozenLeader{namespace: namespace, pod: pod, acks: make(chan ledger.Ack, 1<<16)}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		return connectPod(ctx, namespace, pod, p.Status.PodIP, password)
	}
	for range 3 {
		f.writers.Go(func() { ledger.Pinned(ctx, connect, f.acks) })
	}
	waitfor.Condition(t, 20*time.Second, "the leader's own clients acknowledged", func() error {
		if len(f.acks) < 10 {
			return fmt.Errorf("%d so far", len(f.acks))
		}
		return nil
	})
	for _, c := range []string{"postgres", "agent"} {
		podGroupIn(t, namespace, pod).sub(c).freeze(t, true)
	}
	f.frozenAt = time.Now()
	// A test that fails before the thaw must not leave the pod frozen for
	// the next one.
	t.Cleanup(func() {
		if !f.thawed {
			for _, c := range []string{"postgres", "agent"} {
				_ = cgroupFreeze(podGroupIn(t, namespace, pod).sub(c), false)
			}
			f.stop()
			f.writers.Wait()
		}
	})
	return f
}

// thawAndCheck thaws the pod in the order least favourable to Regent
// (PostgreSQL first, the agent 300 ms later, as a loaded node might
// schedule them), lets its clients try for 8 s more, and fails the test if
// any commit executed after the freeze was acknowledged. Commits the gate
// or a follower acknowledged just before the freeze, whose acknowledgement
// the frozen walsender had not read yet, reach their clients after the
// thaw: decided before the freeze, they are counted, not failed.
func (f *frozenLeader) thawAndCheck(t testing.TB) {
	t.Helper()
	podGroupIn(t, f.namespace, f.pod).sub("postgres").freeze(t, false)
	time.Sleep(300 * time.Millisecond)
	podGroupIn(t, f.namespace, f.pod).sub("agent").freeze(t, false)
	f.thawed = true
	thawed := time.Now()
	time.Sleep(8 * time.Second)
	f.stop()
	f.writers.Wait()
	close(f.acks)
	for a := range f.acks {
		f.acked = append(f.acked, a)
	}
	late, inFlight := ledger.AfterThaw(f.acked, f.frozenAt, thawed)
	t.Logf("thawed old leader %s: %d commits executed after the freeze acknowledged in 8 s of trying with 3 clients; "+
		"%d acknowledgements decided before the freeze delivered after the thaw", f.pod, late, inFlight)
	if late > 0 {
		t.Errorf("the thawed old leader %s acknowledged %d commits executed after the freeze", f.pod, late)
	}
}

// An Async-mode leader frozen past its lease and thawed after a new leader
// wrote acknowledges nothing (the commit gate), and the only rows lost are
// those committed before the freeze that no follower had received,
// counted and printed.
func TestAsyncFrozenLeaderAcknowledgesNothing(t *testing.T) {
	ctx := t.Context()
	const ans = "e2e-async"
	createHealthyCluster(t, ans, "mode: Async")
	super, err := cs.CoreV1().Secrets(ans).Get(ctx, "db-superuser", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	password := string(super.Data["password"])
	podIP := func(name string) string {
		p, err := cs.CoreV1().Pods(ans).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Status.PodIP
	}
	old, epoch := fieldIn(t, ans, ".status.leader"), fieldIn(t, ans, ".status.epoch")
	waitfor.Condition(t, 30*time.Second, "the table on the leader", func() error {
		c, err := connectPod(ctx, ans, old, podIP(old), password)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
		return err
	})

	frozen := freezeLeader(t, ans, old, password)
	var leader string
	waitfor.Condition(t, 60*time.Second, "a new leader at a higher epoch", func() error {
		if l, e := fieldIn(t, ans, ".status.leader"), fieldIn(t, ans, ".status.epoch"); l == old || e == epoch || l == "" {
			return fmt.Errorf("leader %q at epoch %s", l, e)
		}
		leader = fieldIn(t, ans, ".status.leader")
		return nil
	})
	waitfor.Condition(t, 30*time.Second, leader+" accepts a write", func() error {
		c, err := connectPod(ctx, ans, leader, podIP(leader), password)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "INSERT INTO t DEFAULT VALUES")
		return err
	})
	t.Logf("Async: %s frozen → %s writes: %s", old, leader, time.Since(frozen.frozenAt).Round(time.Millisecond))
	frozen.thawAndCheck(t)
	kubectl(t, "-n", ans, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=3m")
	t.Log("\n" + kubectl(t, "-n", ans, "get", "dbrs") + kubectl(t, "-n", ans, "get", "pods", "-L", "regent.dev/role,regent.dev/epoch"))

	// What the new leader has of what the old one acknowledged.
	have := map[int]bool{}
	waitfor.Condition(t, 30*time.Second, "the rows on the new leader", func() error {
		c, err := connectPod(ctx, ans, leader, podIP(leader), password)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		rows, err := c.Query(ctx, "SELECT id FROM t")
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int
			if err := rows.Scan(&id); err != nil {
				return err
			}
			have[id] = true
		}
		return rows.Err()
	})
	lost, lostAfterFreeze := ledger.Lost(frozen.acked, have, frozen.frozenAt)
	t.Logf("Async: %d of %d rows the old leader acknowledged are lost (committed before the freeze, not yet on the new leader)",
		lost, len(frozen.acked))
	if lostAfterFreeze > 0 {
		t.Errorf("%d lost rows were executed after the freeze", lostAfterFreeze)
	}
	kubectl(t, "delete", "namespace", ans, "--wait=true", "--timeout=2m")
}

// A Sync-mode leader frozen past its lease and thawed after a new leader
// took over rejoins as a follower, every time: REGENT_FREEZES runs (10),
// each counted. Rows acknowledged through the leader Service all along are
// on every member at the end.
func TestSyncFrozenLeadersRejoinEveryTime(t *testing.T) {
	runs := countFromEnv(t, "REGENT_FREEZES", 10)
	const sns = "e2e-syncfreeze"
	createHealthyCluster(t, sns, "mode: Sync\n    syncReplicas: 1")
	dropWhenDone(t, sns)
	w := startWriter(t, sns)
	var rejoined []time.Duration
	failed := 0
	for i := range runs {
		kubectl(t, "-n", sns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=3m")
		old, epoch := fieldIn(t, sns, ".status.leader"), fieldIn(t, sns, ".status.epoch")
		for _, c := range []string{"postgres", "agent"} {
			podGroupIn(t, sns, old).sub(c).freeze(t, true)
		}
		waitfor.Condition(t, 60*time.Second, "a new leader", func() error {
			if l, e := fieldIn(t, sns, ".status.leader"), fieldIn(t, sns, ".status.epoch"); l == old || l == "" || e == epoch {
				return fmt.Errorf("leader %q at epoch %s", l, e)
			}
			return nil
		})
		podGroupIn(t, sns, old).sub("postgres").freeze(t, false)
		podGroupIn(t, sns, old).sub("agent").freeze(t, false)
		thawed := time.Now()
		out, err := toolResult(t, "", "kubectl", "-n", sns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=2m")
		if err != nil {
			failed++
			t.Errorf("freeze %d: %s did not rejoin within 2 min of its thaw: %v\n%s\n%s", i+1, old, err, out,
				kubectl(t, "-n", sns, "get", "dbrs", "-o", "jsonpath={.status.conditions}"))
			continue
		}
		took := time.Since(thawed)
		rejoined = append(rejoined, took)
		t.Logf("freeze %d: %s thawed after %s took over; a follower again %s later", i+1, old,
			fieldIn(t, sns, ".status.leader"), took.Round(100*time.Millisecond))
	}
	slices.Sort(rejoined)
	t.Logf("Sync, frozen leader past its lease then thawed: %d of %d rejoined as followers (slowest %s)", len(rejoined), runs,
		func() time.Duration {
			if len(rejoined) == 0 {
				return 0
			}
			return rejoined[len(rejoined)-1].Round(100 * time.Millisecond)
		}())
	if failed > 0 {
		t.Errorf("%d of %d frozen leaders did not rejoin", failed, runs)
	}
	kubectl(t, "-n", sns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=3m")
	for _, pod := range []string{"db-0", "db-1", "db-2"} {
		w.checkAllOn(t, sns, pod)
	}
}
