package controllers

import (
	"encoding/json"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/s3server"
	"github.com/regent-dev/regent/replica/backup"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walship"
)

// storeAndSecret runs a real S3 server with the bucket "backups" and
// makes a namespace with its access key in Secret s3.
func storeAndSecret(t *testing.T) (*s3server.Server, string) {
	t.Helper()
	srv, err := s3server.Start(t.TempDir(), s3server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	NewWithT(t).Expect(srv.MakeBucket("backups")).To(Succeed())
	ns := newNamespace(t)
	NewWithT(t).Expect(k8s.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s3"},
		StringData: map[string]string{"accessKeyId": s3server.AccessKey, "secretAccessKey": s3server.SecretKey}})).To(Succeed())
	return srv, ns
}

func withStore(rs *regentv1.ReplicaSet) {
	rs.Spec.Backup.ObjectStore = &regentv1.ObjectStoreSpec{Endpoint: "http://127.0.0.1:1", Bucket: "backups",
		Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}
}

// postgresEnv is the postgres container's environment in the StatefulSet.
func postgresEnv(t *testing.T, g Gomega, ns string) map[string]string {
	t.Helper()
	sts := get(t, g, ns, "db", &appsv1.StatefulSet{})
	env := map[string]string{}
	for _, c := range sts.Spec.Template.Spec.Containers {
		if c.Name == names.ContainerPostgres {
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
	}
	return env
}

// A store whose Secret does not exist: the cluster runs without archiving
// and says why; once the Secret exists, the pods get the store.
func TestAnObjectStoreWithoutItsSecretRunsWithoutArchiving(t *testing.T) {
	ns, _ := liveCluster(t, withStore, 0x3000000, 0x3000000, 0x3000000)
	NewWithT(t).Eventually(func(g Gomega) {
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		c := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionArchiving)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(regentv1.ReasonObjectStoreInvalid))
		g.Expect(c.Message).To(ContainSubstring("the Secret " + ns + "/s3, named by credentials.secretName, does not exist"))
		hasEvent(t, g, ns, regentv1.EventObjectStoreInvalid, "does not exist")
		g.Expect(postgresEnv(t, g, ns)).NotTo(HaveKey(names.EnvObjectStore))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// A Backup meanwhile fails at once, saying why.
	b := &regentv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nowhere"}, Spec: regentv1.BackupSpec{Cluster: "db"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), b)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "nowhere", &regentv1.Backup{})
		g.Expect(got.Status.Phase).To(Equal(regentv1.BackupFailed))
		g.Expect(got.Status.Error).To(ContainSubstring("spec.backup.objectStore cannot be used: the Secret " + ns + "/s3"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s3"},
		StringData: map[string]string{"accessKeyId": "id"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), secret)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionArchiving).Message).
			To(ContainSubstring(`has no key "secretAccessKey"`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	secret.StringData = map[string]string{"accessKeyId": "id", "secretAccessKey": "secret"}
	NewWithT(t).Expect(k8s.Update(t.Context(), secret)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		env := postgresEnv(t, g, ns)
		g.Expect(env).To(HaveKeyWithValue(names.EnvObjectStore,
			`{"endpoint":"http://127.0.0.1:1","bucket":"backups","path":"`+ns+`/db","region":"us-east-1"}`))
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionArchiving).Reason).
			NotTo(Equal(regentv1.ReasonObjectStoreInvalid))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A Backup runs on the most advanced ready follower, is recorded when its
// agent reports the end, and the member's annotation goes; a failed one
// says why.
func TestABackupRunsOnAFollowerAndIsRecorded(t *testing.T) {
	// The Secret first: one made later changes the pod template, and the
	// rollout that follows would take the backup's member away.
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s3"},
		StringData: map[string]string{"accessKeyId": "id", "secretAccessKey": "secret"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), secret)).To(Succeed())
	ns, agents := liveClusterIn(t, ns, withStore, 0x3000000, 0x3000000, 0x3000100)
	b := &regentv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "now"}, Spec: regentv1.BackupSpec{Cluster: "db"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), b)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "now", &regentv1.Backup{})
		g.Expect(got.Status.Phase).To(Equal(regentv1.BackupCompleted))
		g.Expect(got.Status.Member).To(Equal("db-2"), "the follower that replayed the most")
		g.Expect(got.Status.FromStandby).To(BeTrue())
		g.Expect(got.Status.ID).To(MatchRegexp(`^[0-9]{8}T[0-9]{6}Z$`))
		g.Expect(got.Status.StoredBytes).To(BeEquivalentTo(1 << 18))
		g.Expect(get(t, g, ns, "db-2", &corev1.Pod{}).Annotations).NotTo(HaveKey(names.AnnotationBackup))
		hasEvent(t, g, ns, regentv1.EventBackupCompleted, got.Status.ID)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	agents[2].set(func(a *hollowAgent) { a.backupFails = "pg_basebackup: could not connect" })
	b2 := &regentv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "again"}, Spec: regentv1.BackupSpec{Cluster: "db"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), b2)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "again", &regentv1.Backup{})
		g.Expect(got.Status.Phase).To(Equal(regentv1.BackupFailed))
		g.Expect(got.Status.Error).To(ContainSubstring("could not connect"))
		hasEvent(t, g, ns, regentv1.EventBackupFailed, "could not connect")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

}

// A restored cluster is checked against its source before any pod exists:
// a source without a usable backup, or a target before its first, makes
// the ReplicaSet Degraded with the reason and creates nothing; a good one
// starts the Lease above the source's newest timeline.
func TestARecoveryIsCheckedAgainstItsSourceFirst(t *testing.T) {
	srv, ns := storeAndSecret(t)
	source := regentv1.ObjectStoreSpec{Endpoint: srv.Endpoint, Bucket: "backups", Path: "old/db",
		Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}
	restore := func(name string, target time.Time) {
		rs := newReplicaSet(ns, name, func(rs *regentv1.ReplicaSet) {
			rs.Spec.Bootstrap.Recovery = &regentv1.RecoverySpec{ObjectStore: source, TargetTime: &metav1.Time{Time: target}}
		})
		NewWithT(t).Expect(k8s.Create(t.Context(), rs)).To(Succeed())
	}
	degraded := func(name, message string) {
		t.Helper()
		NewWithT(t).Eventually(func(g Gomega) {
			rs := get(t, g, ns, name, &regentv1.ReplicaSet{})
			c := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionDegraded)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(regentv1.ReasonReconcileFailed))
			g.Expect(c.Message).To(ContainSubstring(message))
			var lease coordinationv1.Lease
			g.Expect(apierrors.IsNotFound(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: names.Lease(name)}, &lease))).To(BeTrue())
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	}

	restore("empty", time.Now())
	degraded("empty", "holds no backup")

	// A backup that ended an hour ago, on timeline 2; timeline 3 exists.
	store, err := objectstore.Open(objectstore.Config{Endpoint: srv.Endpoint, Bucket: "backups", Path: "old/db",
		AccessKeyID: s3server.AccessKey, SecretAccessKey: s3server.SecretKey})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	ended := time.Now().Add(-time.Hour).UTC()
	m, _ := json.Marshal(backup.Manifest{ID: backup.NewID(ended), Timeline: 2, EndTime: ended})
	_, err = store.PutPlain(t.Context(), backup.ManifestKey(backup.NewID(ended)), m, "application/json")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	_, err = store.PutSmall(t.Context(), walship.Key("00000003.history"), []byte("2\t0/5000000\tno recovery target specified\n"))
	NewWithT(t).Expect(err).NotTo(HaveOccurred())

	restore("too-early", ended.Add(-time.Hour))
	degraded("too-early", "is before the end of the first backup")

	restore("good", time.Now())
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, names.Lease("good"), &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(4), "one above the source's newest timeline, 3")
		g.Expect(lease.Annotations).To(HaveKeyWithValue(names.AnnotationFirstEpoch, "4"))
		env := map[string]string{}
		sts := get(t, g, ns, "good", &appsv1.StatefulSet{})
		for _, c := range sts.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				env[c.Name+"/"+e.Name] = e.Value
			}
		}
		g.Expect(env).To(HaveKey(names.ContainerPostgres + "/" + names.EnvRecoveryStore))
		g.Expect(env[names.ContainerAgent+"/"+names.EnvRecovery]).To(ContainSubstring(`"time":"`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// Retention, against a real store: with backups: 1, the older backup goes
// with the WAL before the newer one's start (history files stay), and its
// Backup object; the status counts what the store holds.
func TestRetentionRemovesOldBackupsAndTheirWALFromTheStore(t *testing.T) {
	srv, ns := storeAndSecret(t)
	store, err := objectstore.Open(objectstore.Config{Endpoint: srv.Endpoint, Bucket: "backups", Path: ns + "/db",
		AccessKeyID: s3server.AccessKey, SecretAccessKey: s3server.SecretKey})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	put := func(m backup.Manifest) {
		b, _ := json.Marshal(m)
		_, err := store.PutPlain(t.Context(), backup.ManifestKey(m.ID), b, "application/json")
		NewWithT(t).Expect(err).NotTo(HaveOccurred())
		_, err = store.PutSmall(t.Context(), backup.DataKey(m.ID), []byte("tar"))
		NewWithT(t).Expect(err).NotTo(HaveOccurred())
	}
	old, newer := time.Now().Add(-48*time.Hour).UTC(), time.Now().Add(-time.Hour).UTC()
	put(backup.Manifest{ID: backup.NewID(old), Timeline: 1, StartLSN: 0x2000028, EndLSN: 0x2000100, EndTime: old})
	put(backup.Manifest{ID: backup.NewID(newer), Timeline: 2, StartLSN: 0x5000028, EndLSN: 0x5000100, EndTime: newer})
	wal := []string{"00000002.history", "000000010000000000000002", "000000010000000000000004", "000000020000000000000005", "000000020000000000000006"}
	for _, name := range wal {
		_, err := store.PutSmall(t.Context(), walship.Key(name), []byte(name))
		NewWithT(t).Expect(err).NotTo(HaveOccurred())
	}
	// The older backup's object, as the operator would have recorded it.
	b := &regentv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "old"}, Spec: regentv1.BackupSpec{Cluster: "db"}}
	NewWithT(t).Expect(k8s.Create(t.Context(), b)).To(Succeed())
	b.Status = regentv1.BackupObjectStatus{Phase: regentv1.BackupCompleted, ID: backup.NewID(old), CompletedAt: &metav1.Time{Time: old}}
	NewWithT(t).Expect(k8s.Status().Update(t.Context(), b)).To(Succeed())

	liveClusterIn(t, ns, func(rs *regentv1.ReplicaSet) {
		rs.Spec.Backup.ObjectStore = &regentv1.ObjectStoreSpec{Endpoint: srv.Endpoint, Bucket: "backups",
			Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}
		rs.Spec.Backup.Retention = &regentv1.RetentionSpec{Backups: ptr.To[int32](1)}
	}, 0x6000000, 0x6000000, 0x6000000)
	NewWithT(t).Eventually(func(g Gomega) {
		objs, err := store.List(t.Context(), "")
		g.Expect(err).NotTo(HaveOccurred())
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		g.Expect(keys).To(ConsistOf(
			backup.ManifestKey(backup.NewID(newer)), backup.DataKey(backup.NewID(newer)),
			walship.Key("00000002.history"), walship.Key("000000020000000000000005"), walship.Key("000000020000000000000006")))
		var gone regentv1.Backup
		g.Expect(apierrors.IsNotFound(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "old"}, &gone))).To(BeTrue())
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(rs.Status.Archive).NotTo(BeNil())
		g.Expect(rs.Status.Archive.Backups).To(BeEquivalentTo(1))
		g.Expect(rs.Status.Archive.LastBackup).To(Equal(backup.NewID(newer)))
		g.Expect(rs.Status.Archive.FirstRecoverabilityPoint.Time.Unix()).To(Equal(newer.Unix()))
		hasEvent(t, g, ns, regentv1.EventBackupCompleted, "Retention removed backups "+backup.NewID(old))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}
