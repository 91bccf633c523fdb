package dataplane_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/replica/api"
)

// Each switchover leaves the segment it happened in under two timelines.
// After four of them, once every member's checkpoint is past the switches,
// each member's pg_wal holds one file per segment behind that checkpoint,
// and the cluster still has every row everywhere and switches over again.
func TestSwitchoversLeaveOneCopyOfEachSegment(t *testing.T) {
	c := operatedCluster(t, "127.0.52", func(*regentv1.ReplicaSet) {})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	if err := exec1(t.Context(), c.pods[0], "CREATE TABLE t (id serial PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	leader, rows := 0, 0
	for i := range 5 {
		for range 2 {
			switchWAL(t, c.pods[leader], fmt.Sprintf("row %d", rows))
			rows++
		}
		next := (leader + 1) % 3
		switchoverTo(t, c, c.pods[next], i+2)
		leader = next
	}
	// Move every checkpoint past the switches: segments and a checkpoint
	// on the leader, then a restartpoint on each follower once it has
	// replayed that checkpoint (and the row after it).
	for range 3 {
		switchWAL(t, c.pods[leader], fmt.Sprintf("row %d", rows))
		rows++
	}
	if err := exec1(t.Context(), c.pods[leader], "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	switchWAL(t, c.pods[leader], fmt.Sprintf("row %d", rows))
	rows++
	for _, p := range c.pods {
		waitfor.Condition(t, 60*time.Second, p.name+" has every row and a new checkpoint", func() error {
			if n, err := countRows(t.Context(), p); err != nil || n != rows {
				return fmt.Errorf("%d of %d rows: %w", n, rows, err)
			}
			return exec1(t.Context(), p, "CHECKPOINT")
		})
	}
	for _, p := range c.pods {
		waitfor.Condition(t, 30*time.Second, p.name+"'s pg_wal without a second copy of a segment", func() error {
			return oneCopyBehindCheckpoint(t, p)
		})
	}
	switchoverTo(t, c, c.pods[(leader+1)%3], 7)
}

// switchoverTo asks the operator for a switchover to p and waits until p
// leads epoch.
func switchoverTo(t *testing.T, c *cluster, p *pod, epoch int) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rs := &regentv1.ReplicaSet{}
		if err := rtClient(t).Get(t.Context(), ctrlKey(c.ns), rs); err != nil {
			return err
		}
		rs.Annotations = map[string]string{names.AnnotationSwitchoverTo: p.name}
		return rtClient(t).Update(t.Context(), rs)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 60*time.Second, fmt.Sprintf("%s leads epoch %d", p.name, epoch), func() error {
		st, err := p.status()
		if err != nil {
			return err
		}
		if st.Mode != api.ModeLeader || st.Epoch != int64(epoch) || st.InRecovery || !st.Running {
			return fmt.Errorf("mode %s at epoch %d, in recovery %v", st.Mode, st.Epoch, st.InRecovery)
		}
		return nil
	})
	for _, q := range c.pods {
		waitfor.Condition(t, 120*time.Second, q.name+" ready", q.ready)
	}
}

var segmentFile = regexp.MustCompile(`^[0-9A-F]{8}([0-9A-F]{16})(\.partial)?$`)

// oneCopyBehindCheckpoint fails when p's pg_wal holds two files of one
// segment behind the segment of its last checkpoint's redo.
func oneCopyBehindCheckpoint(t *testing.T, p *pod) error {
	t.Helper()
	cn, err := p.conn(t.Context())
	if err != nil {
		return err
	}
	defer cn.Close(t.Context())
	var redo string
	if err := cn.QueryRow(t.Context(), "SELECT redo_wal_file FROM pg_control_checkpoint()").Scan(&redo); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(p.logDir, "data", "pgdata", "pg_wal"))
	if err != nil {
		return err
	}
	copies := map[string][]string{}
	for _, e := range entries {
		if m := segmentFile.FindStringSubmatch(e.Name()); m != nil && m[1] < redo[8:] {
			copies[m[1]] = append(copies[m[1]], e.Name())
		}
	}
	var twice []string
	for _, files := range copies {
		if len(files) > 1 {
			twice = append(twice, strings.Join(files, " and "))
		}
	}
	if len(twice) > 0 {
		return fmt.Errorf("redo in %s; segments held twice: %s", redo, strings.Join(twice, "; "))
	}
	return nil
}
