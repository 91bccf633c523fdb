package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/s3server"
	"github.com/regent-dev/regent/internal/waitfor"
)

// s3Addr is where the tests' S3 server listens: an address of the local
// cluster's network namespace, which every pod reaches.
const s3Addr = "10.244.0.250:7070"

// startS3 runs versitygw beside the local cluster, in its network
// namespace, with the bucket "backups".
func startS3(t *testing.T) *s3server.Server {
	t.Helper()
	srv, err := s3server.Start(t.TempDir(), s3server.Options{NetNS: cfg.NetNS, Addr: s3Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.MakeBucket("backups"); err != nil {
		t.Fatal(err)
	}
	return srv
}

// s3Secret creates the Secret of the store's access key in namespace.
func s3Secret(t *testing.T, namespace string) {
	t.Helper()
	tool(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: s3
stringData:
  accessKeyId: %s
  secretAccessKey: %s
`, s3server.AccessKey, s3server.SecretKey), "kubectl", "-n", namespace, "apply", "-f", "-")
}

// connectMember logs in as postgres to pod of cluster in namespace, over
// TLS with the cluster's CA.
func connectMember(ctx context.Context, namespace, cluster, pod string) (*pgx.Conn, error) {
	super, err := cs.CoreV1().Secrets(namespace).Get(ctx, cluster+"-superuser", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, cluster+"-ca", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(os.TempDir(), "regent-e2e-"+namespace+"-"+cluster+"-ca.crt")
	if err := os.WriteFile(caFile, []byte(cm.Data["ca.crt"]), 0o600); err != nil {
		return nil, err
	}
	p, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	c, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=app connect_timeout=3 "+
		"sslmode=verify-full sslrootcert=%s", p.Status.PodIP, super.Data["password"], caFile))
	if err != nil {
		return nil, err
	}
	c.TLSConfig.ServerName = pod
	c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.Dial(ctx, cfg.NetNS, network, addr)
	}
	return pgx.ConnectConfig(ctx, c)
}

// onLeader runs sql on the leader of cluster.
func onLeader(t *testing.T, namespace, cluster, sql string, args ...any) {
	t.Helper()
	leader := strings.TrimSpace(kubectl(t, "-n", namespace, "get", "dbrs", cluster, "-o", "jsonpath={.status.leader}"))
	conn, err := connectMember(t.Context(), namespace, cluster, leader)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// The check: rows written with their times, T noted, a table
// dropped after T; the ReplicaSet and its claims deleted; a new
// ReplicaSet restored to T has every row written before T and none after,
// and the dropped table.
func TestARestoredClusterHasEveryRowBeforeItsTargetAndNoneAfter(t *testing.T) {
	const bns = "e2e-backup"
	srv := startS3(t)
	installOperator(t)
	kubectl(t, "create", "namespace", bns)
	dropWhenDone(t, bns)
	s3Secret(t, bns)
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: db
spec:
  replicas: 2
  storage:
    size: 1Gi
  failover:
    leaseDurationSeconds: 6
  backup:
    objectStore:
      endpoint: http://`+s3Addr+`
      bucket: backups
      credentials:
        secretName: s3
`, "kubectl", "-n", bns, "apply", "-f", "-")
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=condition=Archiving", "--timeout=2m")

	onLeader(t, bns, "db", "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	onLeader(t, bns, "db", "CREATE TABLE dropped (id int)")
	onLeader(t, bns, "db", "INSERT INTO t (id) SELECT g FROM generate_series(1, 500) g")

	start := time.Now()
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: Backup
metadata:
  name: first
spec:
  cluster: db
`, "kubectl", "-n", bns, "apply", "-f", "-")
	kubectl(t, "-n", bns, "wait", "dbbackup/first", "--for=jsonpath={.status.phase}=Completed", "--timeout=3m")
	t.Logf("backup completed in %v:\n%s", time.Since(start).Round(time.Millisecond), kubectl(t, "-n", bns, "get", "dbbackup"))
	if member := strings.TrimSpace(kubectl(t, "-n", bns, "get", "dbbackup", "first", "-o", "jsonpath={.status.member}")); member == fieldIn(t, bns, ".status.leader") {
		t.Errorf("the backup ran on the leader %s, with a ready follower", member)
	}

	// Rows after the backup, one by one with their commit times; T falls
	// between two of them.
	for i := 501; i <= 600; i++ {
		onLeader(t, bns, "db", "INSERT INTO t (id) VALUES ($1)", i)
	}
	time.Sleep(200 * time.Millisecond)
	target := time.Now().UTC()
	time.Sleep(200 * time.Millisecond)
	for i := 601; i <= 700; i++ {
		onLeader(t, bns, "db", "INSERT INTO t (id) VALUES ($1)", i)
	}
	onLeader(t, bns, "db", "DROP TABLE dropped")
	onLeader(t, bns, "db", "SELECT pg_switch_wal()")
	waitfor.Condition(t, 2*time.Minute, "the WAL after the drop archived", func() error {
		if n := fieldIn(t, bns, ".status.archive.pendingWAL"); n != "" && n != "0" {
			return fmt.Errorf("%s WAL files waiting", n)
		}
		last := fieldIn(t, bns, ".status.archive.lastArchivedWAL")
		if last == "" {
			return fmt.Errorf("nothing archived yet")
		}
		return nil
	})
	t.Logf("archive status: %s", kubectl(t, "-n", bns, "get", "dbrs", "db", "-o", "jsonpath={.status.archive}"))

	// The cluster and its data go.
	kubectl(t, "-n", bns, "delete", "dbrs", "db", "--wait=true", "--timeout=2m")
	kubectl(t, "-n", bns, "wait", "pod", "-l", "regent.dev/cluster=db", "--for=delete", "--timeout=2m")
	kubectl(t, "-n", bns, "delete", "pvc", "-l", "regent.dev/cluster=db", "--wait=true", "--timeout=2m")

	start = time.Now()
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: restored
spec:
  replicas: 2
  storage:
    size: 1Gi
  failover:
    leaseDurationSeconds: 6
  bootstrap:
    recovery:
      objectStore:
        endpoint: http://`+s3Addr+`
        bucket: backups
        path: `+bns+`/db
        credentials:
          secretName: s3
      targetTime: `+target.Format(time.RFC3339Nano)+`
  backup:
    objectStore:
      endpoint: http://`+s3Addr+`
      bucket: backups
      credentials:
        secretName: s3
`, "kubectl", "-n", bns, "apply", "-f", "-")
	kubectl(t, "-n", bns, "wait", "dbrs/restored", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
	t.Logf("restored to %s and Healthy in %v", target.Format(time.RFC3339Nano), time.Since(start).Round(time.Millisecond))

	leader := strings.TrimSpace(kubectl(t, "-n", bns, "get", "dbrs", "restored", "-o", "jsonpath={.status.leader}"))
	conn, err := connectMember(t.Context(), bns, "restored", leader)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n, maxID int
	var last time.Time
	if err := conn.QueryRow(t.Context(), "SELECT count(*), max(id), max(at) FROM t").Scan(&n, &maxID, &last); err != nil {
		t.Fatal(err)
	}
	var before int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM t WHERE at < $1", target).Scan(&before); err != nil {
		t.Fatal(err)
	}
	t.Logf("restored: %d rows, the last %d at %s (target %s)", n, maxID, last.UTC().Format(time.RFC3339Nano), target.Format(time.RFC3339Nano))
	if n != 600 || maxID != 600 || before != 600 {
		t.Errorf("restored %d rows up to id %d (%d before the target); want exactly the 600 written before it", n, maxID, before)
	}
	var dropped bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass('dropped') IS NOT NULL").Scan(&dropped); err != nil {
		t.Fatal(err)
	}
	if !dropped {
		t.Error("the table dropped after the target is missing")
	}
	// The restored cluster archives to a path of its own.
	kubectl(t, "-n", bns, "wait", "dbrs/restored", "--for=condition=Archiving", "--timeout=2m")
	if _, err := os.Stat(srv.ObjectPath("backups", bns+"/restored/regent.json")); err != nil {
		t.Errorf("the restored cluster does not archive to its own path: %v", err)
	}
}
