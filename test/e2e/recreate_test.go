package e2e_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// A ReplicaSet deleted and created again under the same name, its volumes
// kept (pvcRetentionPolicy Retain, the default), comes back as it was: the
// same passwords, every acknowledged row, and leadership going on from the
// epoch it had reached, not starting over with db-0 at epoch 1 (db-0 is
// not the leader here, so that starting over would show).
func TestRecreatedClusterComesBackAsItWas(t *testing.T) {
	ctx := t.Context()
	const rns = "e2e-recreate"
	const replication = "mode: Sync\n    syncReplicas: 1"
	createHealthyCluster(t, rns, replication)
	secret, err := cs.CoreV1().Secrets(rns).Get(ctx, "db-superuser", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	password := string(secret.Data["password"])
	podIP := func(name string) (string, error) {
		p, err := cs.CoreV1().Pods(rns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return p.Status.PodIP, nil
	}
	connect := func(pod string) (*pgx.Conn, error) {
		ip, err := podIP(pod)
		if err != nil {
			return nil, err
		}
		return connectPod(ctx, rns, pod, ip, password)
	}
	exec := func(pod, sql string) error {
		c, err := connect(pod)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}

	if fieldIn(t, rns, ".status.leader") != "db-2" {
		kubectl(t, "-n", rns, "annotate", "dbrs/db", names.AnnotationSwitchoverTo+"=db-2")
		waitfor.Condition(t, 60*time.Second, "db-2 leads", func() error {
			if l := fieldIn(t, rns, ".status.leader"); l != "db-2" || fieldIn(t, rns, ".status.phase") != "Healthy" {
				return fmt.Errorf("leader %q", l)
			}
			return nil
		})
	}
	const rows = 100
	waitfor.Condition(t, 30*time.Second, "rows written on db-2", func() error {
		return exec("db-2", fmt.Sprintf("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY); "+
			"INSERT INTO kept SELECT generate_series(1, %d) ON CONFLICT DO NOTHING", rows))
	})
	epochBefore, _ := strconv.Atoi(fieldIn(t, rns, ".status.epoch"))

	start := time.Now()
	kubectl(t, "-n", rns, "delete", "dbrs/db", "--wait=true")
	kubectl(t, "-n", rns, "wait", "pod", "-l", names.LabelCluster+"=db", "--for=delete", "--timeout=2m")
	for _, kept := range [][]string{{"lease", "db-leader"}, {"secret", "db-superuser"}, {"secret", "db-app"}, {"pvc", names.PVC("db", 2)}} {
		kubectl(t, "-n", rns, "get", kept[0], kept[1]) // fails the test if gone
	}

	applyHealthyCluster(t, rns, replication)
	t.Logf("deleted and created again: Healthy after %s", time.Since(start).Round(time.Millisecond))
	t.Log("\n" + kubectl(t, "-n", rns, "get", "dbrs") + kubectl(t, "-n", rns, "get", "pods", "-L", "regent.dev/role,regent.dev/epoch"))

	leader := fieldIn(t, rns, ".status.leader")
	epochAfter, _ := strconv.Atoi(fieldIn(t, rns, ".status.epoch"))
	if epochAfter < epochBefore {
		t.Errorf("the epoch went back from %d to %d: leadership started over", epochBefore, epochAfter)
	}
	var n int
	waitfor.Condition(t, 30*time.Second, "the rows on "+leader+" with the old password", func() error {
		c, err := connect(leader)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		return c.QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n)
	})
	if n != rows {
		t.Errorf("%s has %d of the %d acknowledged rows", leader, n, rows)
	}
	if err := exec(leader, "INSERT INTO kept VALUES (0)"); err != nil {
		t.Errorf("the recreated cluster does not take writes: %v", err)
	}
}
