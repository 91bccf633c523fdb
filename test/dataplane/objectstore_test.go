package dataplane_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/s3server"
	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/backup"
	"github.com/regent-dev/regent/replica/instance"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walarchive"
	"github.com/regent-dev/regent/replica/walship"
)

// startStore runs a real S3 server (versitygw) with the bucket "backups".
func startStore(t testing.TB) *s3server.Server {
	t.Helper()
	srv, err := s3server.Start(t.TempDir(), s3server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.MakeBucket("backups"); err != nil {
		t.Fatal(err)
	}
	return srv
}

// openStore opens the cluster's place in the store, as its pods do.
func (c *cluster) openStore(t *testing.T) *objectstore.Store {
	t.Helper()
	s, err := objectstore.Open(*c.store)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// switchWAL writes a row on p and switches to a new segment; it returns
// the name of the segment it completed.
func switchWAL(t *testing.T, p *pod, row string) string {
	t.Helper()
	ctx := t.Context()
	conn, err := p.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO t (v) VALUES ($1)", row); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

func (p *pod) archiveDir() string { return filepath.Join(p.logDir, "data", names.WALArchiveDirName) }

// inStore waits until the store holds every named WAL file.
func inStore(t *testing.T, store *objectstore.Store, within time.Duration, files ...string) {
	t.Helper()
	waitfor.Condition(t, within, fmt.Sprintf("%v in the store", files), func() error {
		for _, f := range files {
			if _, err := store.Stat(t.Context(), walship.Key(f)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Every WAL file reaches the store from the pod that leads, history files
// included, and none is missing across a failover: the new leader ships
// what it received as a follower and the old timeline's last partial
// segment.
func TestWALReachesTheObjectStoreFromWhicheverPodLeads(t *testing.T) {
	srv := startStore(t)
	c := newCluster(t, 2, "127.0.63", withStore(srv))
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	store := c.openStore(t)
	if err := exec1(t.Context(), leader, "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	var tl1 []string
	for i := range 3 {
		tl1 = append(tl1, switchWAL(t, leader, fmt.Sprintf("tl1-%d", i)))
	}
	start := time.Now()
	inStore(t, store, 30*time.Second, tl1...)
	t.Logf("3 switched segments in the store %v after the last switch", time.Since(start).Round(time.Millisecond))

	// What the store returns is what PostgreSQL archived.
	local, err := os.ReadFile(filepath.Join(leader.archiveDir(), tl1[2]))
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.Get(t.Context(), walship.Key(tl1[2]), "")
	if err != nil {
		t.Fatal(err)
	}
	remote, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(local, remote) {
		t.Fatalf("segment %s from the store differs from the leader's archive (err %v)", tl1[2], err)
	}
	// The path is bound to this database.
	raw, err := store.GetPlain(t.Context(), walship.IdentityKey)
	if err != nil {
		t.Fatal(err)
	}
	var id walship.Identity
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatal(err)
	}
	st, _ := leader.status()
	if id.SystemIdentifier == "" || id.SystemIdentifier != st.SystemIdentifier {
		t.Fatalf("identity %+v, want the leader's system identifier %s", id, st.SystemIdentifier)
	}
	// The follower learns the store has its copies (it may prune them).
	waitfor.Condition(t, 30*time.Second, "the follower sees its archive shipped", func() error {
		st, err := follower.status()
		switch {
		case err != nil:
			return err
		case st.WALShipping == nil:
			return errors.New("no walShipping in the follower's status")
		case st.WALShipping.Leading:
			return errors.New("the follower says it leads")
		case st.WALShipping.Pending != 0:
			return fmt.Errorf("%d pending", st.WALShipping.Pending)
		}
		return nil
	})

	// A failover: the new leader ships timeline 2, its history file and
	// timeline 1's partial last segment.
	c.moveLeadership(t, "db-0", "db-1", 2)
	waitfor.Condition(t, 60*time.Second, "db-1 leads", func() error {
		st, err := follower.status()
		if err == nil && (st.InRecovery || !st.Running) {
			err = errors.New("still in recovery")
		}
		return err
	})
	tl2 := switchWAL(t, follower, "tl2")
	if !strings.HasPrefix(tl2, "00000002") {
		t.Fatalf("the new leader's segment %s is not on timeline 2", tl2)
	}
	inStore(t, store, 30*time.Second, "00000002.history", tl2)
	objs, err := store.List(t.Context(), walship.WALPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, strings.TrimSuffix(strings.TrimPrefix(o.Key, walship.WALPrefix), ".zst"))
	}
	t.Logf("the store holds %v", keys)
	// No gap on timeline 1 up to where timeline 2 begins: every segment
	// before the switch point's, and that one whole or partial unless the
	// switch is at its start.
	r, err = store.Get(t.Context(), walship.Key("00000002.history"), "")
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := io.ReadAll(r)
	r.Close()
	var parent int
	var hi, lo uint32
	if _, err := fmt.Sscanf(string(hist), "%d\t%X/%X", &parent, &hi, &lo); err != nil || parent != 1 {
		t.Fatalf("00000002.history = %q (%v)", hist, err)
	}
	switchSeg := fmt.Sprintf("%08X%08X%08X", 1, hi, lo>>24)
	for seg := tl1[0]; seg < switchSeg; seg = nextSegment(seg) {
		if _, err := store.Stat(t.Context(), walship.Key(seg)); err != nil {
			t.Errorf("segment %s: %v", seg, err)
		}
	}
	if lo&0xFFFFFF != 0 && !slices.Contains(keys, switchSeg) && !slices.Contains(keys, switchSeg+".partial") {
		t.Errorf("timeline 1's last segment %s, where timeline 2 begins (%X/%X), is in the store neither whole nor partial", switchSeg, hi, lo)
	}
	// The deposed leader, now following, ships nothing more.
	waitfor.Condition(t, 30*time.Second, "db-0 follows and does not ship", func() error {
		st, err := leader.status()
		if err == nil && (st.WALShipping == nil || st.WALShipping.Leading) {
			err = fmt.Errorf("walShipping %+v", st.WALShipping)
		}
		return err
	})
}

// nextSegment is the segment after seg on seg's timeline (16 MiB
// segments: 256 per "log").
func nextSegment(seg string) string {
	var tli, log, n uint32
	_, _ = fmt.Sscanf(seg, "%08X%08X%08X", &tli, &log, &n)
	n++
	if n == 0x100 {
		log, n = log+1, 0
	}
	return fmt.Sprintf("%08X%08X%08X", tli, log, n)
}

// With the store down, archiving backs up and says so; the pod's archive
// stays within its budget of the volume; when the store returns, what
// was kept is shipped by itself.
func TestWALShippingWaitsOutAStoreThatIsDown(t *testing.T) {
	srv := startStore(t)
	c := newCluster(t, 1, "127.0.64", withStore(srv), withVolume("db-0", 1<<30))
	leader := c.pods[0]
	waitfor.Condition(t, 90*time.Second, "db-0 ready", leader.ready)
	store := c.openStore(t)
	if err := exec1(t.Context(), leader, "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	inStore(t, store, 30*time.Second, switchWAL(t, leader, "before"))

	srv.Stop()
	var held []string
	for i := range 3 {
		held = append(held, switchWAL(t, leader, fmt.Sprintf("down-%d", i)))
	}
	waitfor.Condition(t, 30*time.Second, "the leader reports the store down", func() error {
		st, err := leader.status()
		switch {
		case err != nil:
			return err
		case st.WALShipping == nil || st.WALShipping.Error == "" || st.WALShipping.FailingSince == nil:
			return fmt.Errorf("walShipping %+v", st.WALShipping)
		case st.WALShipping.Pending < 3:
			return fmt.Errorf("%d pending, want at least 3", st.WALShipping.Pending)
		}
		t.Logf("while down: %d pending, %q", st.WALShipping.Pending, st.WALShipping.Error)
		return nil
	})
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	inStore(t, store, 60*time.Second, held...)
	waitfor.Condition(t, 30*time.Second, "shipping healthy again", func() error {
		st, err := leader.status()
		if err == nil && (st.WALShipping.Error != "" || st.WALShipping.Pending != 0) {
			err = fmt.Errorf("walShipping %+v", st.WALShipping)
		}
		return err
	})

	// Down for longer than the archive's budget (4 segments on 1 GiB):
	// the archive drops the oldest unshipped segment rather than fill the
	// volume, and ships the newest when the store returns.
	srv.Stop()
	var later []string
	for i := range 7 {
		later = append(later, switchWAL(t, leader, fmt.Sprintf("long-%d", i)))
		if n := segmentsIn(t, leader.archiveDir()); n > 4 {
			t.Fatalf("the archive holds %d segments, over its budget of 4", n)
		}
	}
	// PostgreSQL's archiver runs behind pg_switch_wal: until it has
	// archived the last segment, the store's return could find the oldest
	// still kept, and ship it.
	newest := later[len(later)-1]
	waitfor.Condition(t, 60*time.Second, "the archiver has archived "+newest, func() error {
		conn, err := leader.conn(t.Context())
		if err != nil {
			return err
		}
		defer conn.Close(t.Context())
		var last string
		if err := conn.QueryRow(t.Context(), "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").Scan(&last); err != nil {
			return err
		}
		if last < newest {
			return fmt.Errorf("last archived %q", last)
		}
		return nil
	})
	if n := segmentsIn(t, leader.archiveDir()); n > 4 {
		t.Fatalf("the archive holds %d segments, over its budget of 4", n)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	inStore(t, store, 60*time.Second, later[len(later)-4:]...)
	if _, err := store.Stat(t.Context(), walship.Key(later[0])); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("segment %s, dropped unshipped, is in the store? %v", later[0], err)
	}
}

func segmentsIn(t *testing.T, dir string) int {
	t.Helper()
	files, err := walarchive.Archive{Dir: dir}.Files()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if len(f.Name) == 24 {
			n++
		}
	}
	return n
}

// backupOn asks p's agent for a base backup, as the operator does (the
// pod's regent.dev/backup annotation), and waits for its outcome in the
// agent's status.
func (c *cluster) backupOn(t testing.TB, p *pod, id string) api.BackupProgress {
	t.Helper()
	pod, err := cs.CoreV1().Pods(c.ns).Get(t.Context(), p.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[names.AnnotationBackup] = id
	if _, err := cs.CoreV1().Pods(c.ns).Update(t.Context(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var done api.BackupProgress
	waitfor.Condition(t, 2*time.Minute, "backup "+id+" done", func() error {
		st, err := p.status()
		switch {
		case err != nil:
			return err
		case st.Backup == nil || st.Backup.ID != id:
			return fmt.Errorf("no backup %s in the status", id)
		case st.Backup.Phase == api.BackupRunning:
			return fmt.Errorf("running, %d bytes", st.Backup.Bytes)
		}
		done = *st.Backup
		return nil
	})
	if done.Phase != api.BackupCompleted {
		t.Fatalf("backup %s: %s: %s", id, done.Phase, done.Error)
	}
	return done
}

// A backup taken on a follower, then WAL from the store, restore a new
// cluster to a point in time, a named restore point or a WAL position
// (the same point): every row written before it is there, none written
// after; its first leader writes on its first epoch's timeline with the
// new cluster's passwords, and its follower clones from it.
func TestABackupAndTheWALRestoreANewClusterToAPointInTime(t *testing.T) {
	srv := startStore(t)
	c := newCluster(t, 2, "127.0.65", withStore(srv))
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	ctx := t.Context()
	if err := exec1(ctx, leader, "CREATE TABLE t (id serial PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	if err := exec1(ctx, leader, "INSERT INTO t (v) SELECT 'in-backup' FROM generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 20*time.Second, "rows replicated", func() error {
		ok, err := hasRow(t, follower, "in-backup")
		if err == nil && !ok {
			err = errors.New("not yet")
		}
		return err
	})
	start := time.Now()
	b := c.backupOn(t, follower, "20261129T100000Z")
	t.Logf("backup on the follower: %d bytes, %d stored, %s → %s, in %v", b.Bytes, b.StoredBytes, b.StartLSN, b.EndLSN,
		time.Since(start).Round(time.Millisecond))
	if !b.FromStandby {
		t.Error("the backup does not say it came from a standby")
	}
	store := c.openStore(t)
	all, err := backup.List(ctx, store)
	if err != nil || len(all) != 1 || all[0].EndLSN != b.EndLSN {
		t.Fatalf("backups in the store: %+v (%v)", all, err)
	}

	for i := range 20 {
		if err := exec1(ctx, leader, fmt.Sprintf("INSERT INTO t (v) VALUES ('before-%d')", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	target := time.Now().UTC()
	// The same point as a named restore point and as a WAL position.
	var mark string
	func() {
		conn, err := leader.conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "SELECT pg_create_restore_point('before-after')::text").Scan(&mark); err != nil {
			t.Fatal(err)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	for i := range 20 {
		if err := exec1(ctx, leader, fmt.Sprintf("INSERT INTO t (v) VALUES ('after-%d')", i)); err != nil {
			t.Fatal(err)
		}
	}
	inStore(t, store, 30*time.Second, switchWAL(t, leader, "after-switch"))

	// New clusters start at epoch 2, above the source's timeline 1.
	for i, target := range []instance.Target{{Time: target.Format(time.RFC3339Nano)}, {Name: "before-after"}, {LSN: mark}} {
		start = time.Now()
		r := newCluster(t, 2, fmt.Sprintf("127.0.%d", 66+10*i), withRecovery(*c.store, instance.RestoreRequest{Target: target}, 2))
		for _, p := range r.pods {
			waitfor.Condition(t, 3*time.Minute, p.name+" ready", p.ready)
		}
		t.Logf("a new cluster restored to %+v and ready in %v", target, time.Since(start).Round(time.Millisecond))
		for _, p := range r.pods {
			conn, err := p.conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var inBackup, before, after, tli int
			err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE v = 'in-backup'), count(*) FILTER (WHERE v LIKE 'before-%'),
				count(*) FILTER (WHERE v LIKE 'after-%' OR v = 'after-switch'), (SELECT timeline_id FROM pg_control_checkpoint()) FROM t`).
				Scan(&inBackup, &before, &after, &tli)
			conn.Close(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if inBackup != 1000 || before != 20 || after != 0 {
				t.Fatalf("%s restored to %+v: %d rows in the backup, %d before the target, %d after; want 1000, 20, 0", p.name, target, inBackup, before, after)
			}
			if tli != 2 {
				t.Errorf("%s: timeline %d, want the first epoch's, 2", p.name, tli)
			}
		}
		if i > 0 {
			r.stop()
			continue
		}
		if err := exec1(ctx, r.pods[0], "INSERT INTO t (v) VALUES ('restored')"); err != nil {
			t.Fatalf("the restored leader takes no write: %v", err)
		}
		r.stop()
	}
}

// A store that refuses the credentials, or has no such bucket: the
// leader's status says so, in the store's words, and nothing is lost
// (the archive keeps the WAL).
func TestWALShippingNamesWrongCredentialsAndBuckets(t *testing.T) {
	srv := startStore(t)
	c := newCluster(t, 1, "127.0.96", withStore(srv), func(c *cluster) { c.store.SecretAccessKey = "not-the-secret" })
	leader := c.pods[0]
	waitfor.Condition(t, 90*time.Second, "db-0 ready", leader.ready)
	if err := exec1(t.Context(), leader, "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	switchWAL(t, leader, "one")
	waitfor.Condition(t, 30*time.Second, "the leader reports the refusal", func() error {
		st, err := leader.status()
		switch {
		case err != nil:
			return err
		case st.WALShipping == nil || !strings.Contains(st.WALShipping.Error, "the object store refused the credentials"):
			return fmt.Errorf("walShipping %+v", st.WALShipping)
		}
		t.Logf("wrong secret: %s", st.WALShipping.Error)
		return nil
	})
}

// A corrupt WAL file in the store stops a restore instead of ending it
// early: the recovery aborts (wal-restore exits 126), the agent reports
// why and tries again, and once the file is whole again the cluster is
// restored to the end of the WAL with every row.
func TestACorruptWALFileStopsARestoreUntilItIsWhole(t *testing.T) {
	srv := startStore(t)
	c := newCluster(t, 1, "127.0.97", withStore(srv))
	leader := c.pods[0]
	waitfor.Condition(t, 90*time.Second, "db-0 ready", leader.ready)
	ctx := t.Context()
	if err := exec1(ctx, leader, "CREATE TABLE t (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	c.backupOn(t, leader, "20261129T110000Z")
	middle := switchWAL(t, leader, "after-the-backup")
	last := switchWAL(t, leader, "last")
	store := c.openStore(t)
	inStore(t, store, 30*time.Second, middle, last)

	path := srv.ObjectPath("backups", c.store.Path+"/"+walship.Key(middle))
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(whole)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newCluster(t, 1, "127.0.98", withRecovery(*c.store, instance.RestoreRequest{}, 2))
	waitfor.Condition(t, 2*time.Minute, "the restore reports the corrupt file", func() error {
		st, err := r.pods[0].status()
		switch {
		case err != nil:
			return err
		case !strings.Contains(st.StartFailure, "corrupt") && !strings.Contains(st.StartFailure, "126"):
			return fmt.Errorf("startFailure %q", st.StartFailure)
		}
		t.Logf("while corrupt: %s", st.StartFailure)
		return nil
	})
	if err := r.pods[0].ready(); err == nil {
		t.Fatal("the cluster is ready with a corrupt WAL file in its source")
	}
	if err := os.WriteFile(path, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	waitfor.Condition(t, 2*time.Minute, "restored once the file is whole", r.pods[0].ready)
	ok, err := hasRow(t, r.pods[0], "last")
	if err != nil || !ok {
		t.Fatalf("the row of the last archived segment is not restored (%v)", err)
	}
}
