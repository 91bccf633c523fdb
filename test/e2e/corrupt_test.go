package e2e_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// A leader whose WAL is corrupt: the record of its last checkpoint is
// overwritten on disk, then every process of its pod killed. Restarted in
// place, its PostgreSQL cannot start ("could not locate a valid checkpoint
// record"): its agent gives the Lease up and a follower leads within
// lease + 2 s of the kill, with every acknowledged row (Sync). The old
// leader, neither startable nor rewindable, is cloned again by itself.
func TestALeaderWhoseWALIsCorruptIsReplaced(t *testing.T) {
	const cns = "e2e-corrupt"
	const lease = 6 * time.Second
	createHealthyCluster(t, cns, "mode: Sync\n    syncReplicas: 1")
	dropWhenDone(t, cns)
	w := startWriter(t, cns)
	w.waitWriting(t)
	old, epoch := fieldIn(t, cns, ".status.leader"), fieldIn(t, cns, ".status.epoch")
	super, err := cs.CoreV1().Secrets(cns).Get(t.Context(), "db-superuser", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(cns).Get(t.Context(), old, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := connectPod(t.Context(), cns, old, pod.Status.PodIP, string(super.Data["password"]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	// The last checkpoint's record, in a segment PostgreSQL has finished
	// (switched away from), so that it never writes that page again.
	var file string
	var offset int64
	checkpoint := func() (string, error) {
		var at string
		err := conn.QueryRow(t.Context(), "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()").Scan(&at)
		return at, err
	}
	if _, err := conn.Exec(t.Context(), "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	at, err := checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), "SELECT file_name, file_offset FROM pg_walfile_name_offset($1::pg_lsn)", at).Scan(&file, &offset); err != nil {
		t.Fatal(err)
	}
	var switched string
	if err := conn.QueryRow(t.Context(), "SELECT pg_switch_wal()::text").Scan(&switched); err != nil {
		t.Fatal(err)
	}
	// Both followers past the segment before it is corrupted: a follower
	// still behind would stream the corrupt record from the leader's disk
	// and stop at it (a lagging follower of a leader whose disk corrupts
	// WAL: not what this test is about).
	waitfor.Condition(t, 30*time.Second, "both followers replayed the corrupted segment", func() error {
		var n int
		err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_replication
			WHERE application_name <> $2 AND replay_lsn >= $1::pg_lsn`, switched, names.CommitGate).Scan(&n)
		if err == nil && n < 2 {
			err = fmt.Errorf("%d of 2", n)
		}
		return err
	})
	segment := filepath.Join(volumePath(t, cns, old), "pgdata", "pg_wal", file)
	f, err := os.OpenFile(segment, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 256), offset); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if again, err := checkpoint(); err != nil || again != at {
		t.Fatalf("a checkpoint ran meanwhile (%s, then %s, %v): the corrupt record is no longer the one read at start", at, again, err)
	}
	_ = conn.Close(t.Context())
	killed := time.Now()
	podGroupIn(t, cns, old).kill(t)

	now, elected := awaitNewLeader(t, cns, old, epoch, lease+30*time.Second)
	w.waitWroteAfter(t, elected)
	back := w.firstAfter(elected).Sub(killed)
	t.Logf("%s's checkpoint record %s (%s at %d) overwritten, its pod killed: %s leads; writes back %s after the kill",
		old, at, file, offset, now, back.Round(100*time.Millisecond))
	// The process kubelet starts the killed pod again at once, and its
	// agent gives the Lease up. A real kubelet first notices the sandbox
	// is gone and makes a new one: the Lease expires before, and the bound
	// is a lost leader's, as for a frozen one (lease + 8 s in the story).
	limit, why := lease+2*time.Second, "lease + 2 s"
	if realNodes {
		limit, why = lease+8*time.Second, "lease + 8 s"
	}
	if back > limit {
		t.Errorf("writes came back %s after the kill; want within %s (%s)", back, why, limit)
	}
	if log := kubectl(t, "-n", cns, "logs", old, "-c", "postgres"); !strings.Contains(log, "could not locate a valid checkpoint record") {
		t.Errorf("%s's PostgreSQL did not fail for the corrupt checkpoint record:\n%s", old, lastLines(log, 20))
	}

	// The old leader comes back by cloning again; nothing acknowledged is
	// lost.
	kubectl(t, "-n", cns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=5m")
	waitfor.Condition(t, time.Minute, "a Recloned event for "+old, func() error {
		out := kubectl(t, "-n", cns, "get", "events", "--field-selector", "reason="+regentv1.EventRecloned,
			"-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
		if !strings.Contains(out, old) {
			return fmt.Errorf("events: %q", out)
		}
		return nil
	})
	for _, p := range []string{"db-0", "db-1", "db-2"} {
		w.checkAllOn(t, cns, p)
	}
}
