package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/names"
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
func onLeader(t *testing.T, namespace, cluster, sql string, args ...any) { //nolint:unparam // any namespace and cluster; one test uses it so far
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
	applyArchivingCluster(t, bns, 2, "mode: Async")

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

	// Rows after the backup, one transaction each with its commit time; T
	// falls between two of them.
	conn, err := connectMember(t.Context(), bns, "db", fieldIn(t, bns, ".status.leader"))
	if err != nil {
		t.Fatal(err)
	}
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := conn.Exec(t.Context(), "INSERT INTO t (id) VALUES ($1)", i); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(501, 600)
	time.Sleep(200 * time.Millisecond)
	target := time.Now().UTC()
	time.Sleep(200 * time.Millisecond)
	insert(601, 700)
	conn.Close(t.Context())
	onLeader(t, bns, "db", "DROP TABLE dropped")
	archivedUpTo(t, bns)
	t.Logf("archive status: %s", kubectl(t, "-n", bns, "get", "dbrs", "db", "-o", "jsonpath={.status.archive}"))

	// The cluster and its data go.
	kubectl(t, "-n", bns, "delete", "dbrs", "db", "--wait=true", "--timeout=2m")
	kubectl(t, "-n", bns, "wait", "pod", "-l", "regent.dev/cluster=db", "--for=delete", "--timeout=2m")
	kubectl(t, "-n", bns, "delete", "pvc", "-l", "regent.dev/cluster=db", "--wait=true", "--timeout=2m")

	start = time.Now()
	applyRestored(t, bns, 2, "\n      targetTime: "+target.Format(time.RFC3339Nano), true)
	t.Logf("restored to %s and Healthy in %v", target.Format(time.RFC3339Nano), time.Since(start).Round(time.Millisecond))

	leader := strings.TrimSpace(kubectl(t, "-n", bns, "get", "dbrs", "restored", "-o", "jsonpath={.status.leader}"))
	conn, err = connectMember(t.Context(), bns, "restored", leader)
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

// applyArchivingCluster applies a ReplicaSet db of replicas pods archiving
// to the test store, with the given replication settings, in a new
// namespace, and waits until it is Healthy and archiving.
func applyArchivingCluster(t *testing.T, namespace string, replicas int, replication string) {
	t.Helper()
	installOperator(t)
	createNamespace(t, namespace)
	dropWhenDone(t, namespace)
	s3Secret(t, namespace)
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: db
spec:
  replicas: `+strconv.Itoa(replicas)+`
  storage:
    size: 1Gi
  replication:
    `+replication+`
  failover:
    leaseDurationSeconds: 6
  backup:
    objectStore:
      endpoint: http://`+s3Addr+`
      bucket: backups
      credentials:
        secretName: s3
`, "kubectl", "-n", namespace, "apply", "-f", "-")
	kubectl(t, "-n", namespace, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
	kubectl(t, "-n", namespace, "wait", "dbrs/db", "--for=condition=Archiving", "--timeout=2m")
}

// takeBackup creates Backup name of db and waits until it completes.
func takeBackup(t *testing.T, namespace, name string) {
	t.Helper()
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: Backup
metadata:
  name: `+name+`
spec:
  cluster: db
`, "kubectl", "-n", namespace, "apply", "-f", "-")
	kubectl(t, "-n", namespace, "wait", "dbbackup/"+name, "--for=jsonpath={.status.phase}=Completed", "--timeout=3m")
}

// archivedUpTo switches db's leader to a new WAL segment and waits until
// the store holds it and everything before.
func archivedUpTo(t *testing.T, namespace string) {
	t.Helper()
	leader := fieldIn(t, namespace, ".status.leader")
	conn, err := connectMember(t.Context(), namespace, "db", leader)
	if err != nil {
		t.Fatal(err)
	}
	var seg string
	err = conn.QueryRow(t.Context(), "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg)
	conn.Close(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 2*time.Minute, "segment "+seg+" archived", func() error {
		last := fieldIn(t, namespace, ".status.archive.lastArchivedWAL")
		if n := fieldIn(t, namespace, ".status.archive.pendingWAL"); n != "" && n != "0" {
			return fmt.Errorf("%s WAL files waiting (last %s)", n, last)
		}
		if len(last) < 24 || last[8:24] < seg[8:24] {
			return fmt.Errorf("last archived %q", last)
		}
		return nil
	})
}

// applyRestored applies ReplicaSet restored of replicas pods, recovered
// from db's store in namespace with the recovery fields target (YAML, ""
// for the end of the WAL), archiving to a store path of its own if
// archive, and waits until it is Healthy.
func applyRestored(t *testing.T, namespace string, replicas int, target string, archive bool) {
	t.Helper()
	backup := ""
	if archive {
		backup = `
  backup:
    objectStore:
      endpoint: http://` + s3Addr + `
      bucket: backups
      credentials:
        secretName: s3`
	}
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: restored
spec:
  replicas: `+strconv.Itoa(replicas)+`
  storage:
    size: 1Gi
  failover:
    leaseDurationSeconds: 6
  bootstrap:
    recovery:
      objectStore:
        endpoint: http://`+s3Addr+`
        bucket: backups
        path: `+namespace+`/db
        credentials:
          secretName: s3`+target+backup+`
`, "kubectl", "-n", namespace, "apply", "-f", "-")
	kubectl(t, "-n", namespace, "wait", "dbrs/restored", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
}

// restoreLatest applies ReplicaSet restored, recovered from db's store to
// the end of its WAL, and returns the ids of table t on its leader.
func restoreLatest(t *testing.T, namespace string) map[int]bool {
	t.Helper()
	start := time.Now()
	applyRestored(t, namespace, 1, "", false)
	t.Logf("restored to the end of the store's WAL, Healthy in %v", time.Since(start).Round(time.Millisecond))
	conn, err := connectMember(t.Context(), namespace, "restored", "restored-0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	rows, err := conn.Query(t.Context(), "SELECT id FROM t")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

// Sync mode, WAL archived while the leader's PostgreSQL is killed and a
// switchover moves it: the store's WAL holds every acknowledged row, and
// a restore to its end has them all.
func TestSyncArchivingThroughFailoversLosesNoAcknowledgedRow(t *testing.T) {
	const bns = "e2e-backup-sync"
	startS3(t)
	applyArchivingCluster(t, bns, 3, "mode: Sync\n    syncReplicas: 1")
	takeBackup(t, bns, "before-faults")
	w := startWriter(t, bns)
	w.waitWriting(t)

	old, epoch := fieldIn(t, bns, ".status.leader"), fieldIn(t, bns, ".status.epoch")
	podGroupIn(t, bns, old).sub("postgres").kill(t)
	killed, _ := awaitNewLeader(t, bns, old, epoch, time.Minute)
	t.Logf("PostgreSQL of %s killed: %s leads", old, killed)
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=3m")
	w.waitWroteAfter(t, time.Now())

	var target string
	for _, m := range []string{"db-0", "db-1", "db-2"} {
		if m != killed {
			target = m
			break
		}
	}
	epoch = fieldIn(t, bns, ".status.epoch")
	kubectl(t, "-n", bns, "annotate", "dbrs/db", names.AnnotationSwitchoverTo+"="+target)
	switched, _ := awaitNewLeader(t, bns, killed, epoch, time.Minute)
	t.Logf("switched over to %s", switched)
	w.waitWroteAfter(t, time.Now())

	w.mu.Lock()
	acked := slices.Clone(w.ids)
	w.mu.Unlock()
	archivedUpTo(t, bns)
	t.Logf("archive: %s", kubectl(t, "-n", bns, "get", "dbrs", "db", "-o", "jsonpath={.status.archive}"))
	have := restoreLatest(t, bns)
	missing := 0
	for _, id := range acked {
		if !have[id] {
			missing++
		}
	}
	t.Logf("%d rows acknowledged before the last archived segment, %d restored", len(acked), len(have))
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged rows are not in the cluster restored from the store", missing, len(acked))
	}
}

// The store stopped for a while: archiving says so (condition, event),
// the leader's volume stays within its budget, and everything is shipped
// once the store is back.
func TestArchivingWaitsOutAStoreThatIsDown(t *testing.T) {
	const bns = "e2e-backup-down"
	srv := startS3(t)
	applyArchivingCluster(t, bns, 3, "mode: Async")
	w := startWriter(t, bns)
	w.waitWriting(t)

	srv.Stop()
	stopped := time.Now()
	for range 3 {
		archiveSwitch(t, bns)
	}
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=condition=Archiving=false", "--timeout=2m")
	t.Logf("Archiving=False %v after the store stopped: %s", time.Since(stopped).Round(time.Millisecond),
		kubectl(t, "-n", bns, "get", "dbrs", "db", "-o", `jsonpath={.status.conditions[?(@.type=="Archiving")].message}`))
	events := kubectl(t, "-n", bns, "get", "events", "--field-selector", "reason=ArchivingFailing", "-o", "name")
	if strings.TrimSpace(events) == "" {
		t.Error("no ArchivingFailing event")
	}
	if used, capacity := fieldIn(t, bns, ".status.members[0].diskUsedBytes"), fieldIn(t, bns, ".status.members[0].diskCapacityBytes"); used != "" && capacity != "" {
		t.Logf("db-0's volume while the store is down: %s of %s bytes", used, capacity)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=condition=Archiving", "--timeout=2m")
	archivedUpTo(t, bns)
	t.Logf("archiving caught up %v after the store came back", time.Since(restarted).Round(time.Millisecond))
	if resumed := kubectl(t, "-n", bns, "get", "events", "--field-selector", "reason=ArchivingResumed", "-o", "name"); strings.TrimSpace(resumed) == "" {
		t.Error("no ArchivingResumed event")
	}
}

// archiveSwitch makes db's leader complete a WAL segment.
func archiveSwitch(t *testing.T, namespace string) {
	t.Helper()
	conn, err := connectMember(t.Context(), namespace, "db", fieldIn(t, namespace, ".status.leader"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
}
