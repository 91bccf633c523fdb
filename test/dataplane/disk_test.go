package dataplane_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// A leader whose data volume fills stays the leader (docs/failover.md, "A
// full disk"): writes fail with PostgreSQL's own error, reads go on, the
// cluster is Degraded=DiskFilling naming it, the Lease does not move, and
// writes resume on it once there is room. Nothing acknowledged is lost.
func TestALeaderWhoseDiskFills(t *testing.T) {
	c := operatedCluster(t, "127.0.51", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = regentv1.ReplicationSync
		rs.Spec.Replication.SyncReplicas = ptr.To[int32](1)
	}, withVolume("db-0", 200<<20))
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	leader := c.pods[0]
	syncLeaderWithTable(t, leader, `ANY 1 ("db_1", "db_2")`)
	w, stop := startWriter(t, c)
	defer stop()
	time.Sleep(500 * time.Millisecond) // rows under load: a workload, not a wait

	// Fill the leader's volume, 16 MB a statement, until it refuses.
	if err := exec1(ctx, leader, "CREATE TABLE fill (pad text)"); err != nil {
		t.Fatal(err)
	}
	filled := time.Now()
	var refusal error
	for i := 0; i < 40 && refusal == nil; i++ {
		refusal = exec1(ctx, leader, "INSERT INTO fill SELECT repeat(md5(g::text || random()::text), 16) FROM generate_series(1, 32000) g")
	}
	t.Logf("the leader's volume refused a write after %s: %v", time.Since(filled).Round(time.Millisecond), refusal)
	if refusal == nil {
		t.Fatal("the leader's 200 MB volume took 640 MB")
	}
	// It stays the leader, says why, and serves reads: every member holds
	// the same data, so another would fill as it did.
	waitfor.Condition(t, 30*time.Second, "Degraded=DiskFilling naming db-0", func() error {
		rs := &regentv1.ReplicaSet{}
		if err := rtClient(t).Get(ctx, ctrlKey(c.ns), rs); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionDegraded)
		if cond == nil || cond.Reason != regentv1.ReasonDiskFilling || !strings.Contains(cond.Message, "db-0 ") {
			return fmt.Errorf("Degraded: %+v", cond)
		}
		return nil
	})
	time.Sleep(8 * time.Second) // longer than the 6 s lease: a workload of waiting, then the Lease is read
	lease, err := cs.CoordinationV1().Leases(c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h, e := ptr.Deref(lease.Spec.HolderIdentity, ""), ptr.Deref(lease.Spec.LeaseTransitions, 0); h != "db-0" || e != 1 {
		t.Fatalf("the Lease moved to %q at epoch %d: a full leader is not replaced", h, e)
	}
	if n, err := countRows(ctx, leader); err != nil {
		t.Errorf("a full leader does not serve reads: %v", err)
	} else {
		t.Logf("the full leader serves reads: %d rows", n)
	}
	// Room again: writes go on, on the same leader, nothing lost.
	freed := time.Now()
	if err := exec1(ctx, leader, "DROP TABLE fill"); err != nil {
		t.Fatalf("dropping the table that filled the disk: %v", err)
	}
	first := w.awaitFirstOn(t, "db-0", freed, 30*time.Second, "db-0 accepts writes again")
	t.Logf("room made → first write accepted again: %s", first.Sub(freed).Round(time.Millisecond))
	stop()
	lost, acked := w.missingOn(t, leader)
	t.Logf("%d rows acknowledged, %d lost", acked, lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged rows missing", lost)
	}
}
