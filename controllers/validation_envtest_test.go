package controllers

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// The API server itself refuses bad specs, with the CRD's CEL messages:
// these tests send them to a real kube-apiserver.

func TestInvalidSpecsAreRefusedOnCreate(t *testing.T) {
	ns := newNamespace(t)
	tests := []struct {
		name    string
		rsName  string
		mutate  func(*regentv1.ReplicaSet)
		message string
	}{
		{"no replicas", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](0) },
			"replicas must be between 1 and 9"},
		{"too many replicas", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](10) },
			"replicas must be between 1 and 9"},
		{"owned parameters", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Postgres.Parameters = map[string]string{"port": "6000", "work_mem": "8MB", "listen_addresses": "*"}
		}, "listen_addresses is managed by Regent and cannot be set"},
		{"owned parameters, each named", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Postgres.Parameters = map[string]string{"port": "6000", "work_mem": "8MB", "listen_addresses": "*"}
		}, "port is managed by Regent and cannot be set"},
		{"synchronous_commit off", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Postgres.Parameters = map[string]string{"synchronous_commit": "off"}
		}, "synchronous_commit must be on, remote_write or remote_apply"},
		{"wal_level minimal", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Postgres.Parameters = map[string]string{"wal_level": "minimal"}
		}, "wal_level must be replica or logical"},
		{"sync quorum as large as the cluster", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Replicas = ptr.To[int32](3)
			rs.Spec.Replication = regentv1.ReplicationSpec{Mode: regentv1.ReplicationSync, SyncReplicas: ptr.To[int32](3)}
		}, "replication.syncReplicas must be less than replicas in Sync mode"},
		{"sync mode with one pod", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Replicas = ptr.To[int32](1)
			rs.Spec.Replication = regentv1.ReplicationSpec{Mode: regentv1.ReplicationSync}
		}, "replication.syncReplicas must be less than replicas in Sync mode"},
		{"data durability in async mode", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Replication = regentv1.ReplicationSpec{DataDurability: regentv1.DataDurabilityPreferred}
		}, "replication.dataDurability applies only to mode Sync"},
		{"zero storage", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Storage.Size = "0" },
			"storage.size must be a positive quantity"},
		{"reserved owner", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Bootstrap.Owner = "postgres" },
			"bootstrap.owner cannot be a reserved role"},
		{"a reserved role declared", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Roles = []regentv1.RoleSpec{{Name: "regent_replication"}}
		}, "the role name is reserved"},
		{"a pg_ role declared", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Roles = []regentv1.RoleSpec{{Name: "pg_monitor"}} },
			"the role name is reserved"},
		{"the bootstrap owner declared", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Roles = []regentv1.RoleSpec{{Name: "app"}} },
			"spec.roles cannot declare the bootstrap owner"},
		{"a role in itself", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Roles = []regentv1.RoleSpec{{Name: "reporter", InRoles: []string{"pg_read_all_data", "reporter"}}}
		}, "a role cannot be a member of itself"},
		{"a role name with a capital", "", func(rs *regentv1.ReplicaSet) { rs.Spec.Roles = []regentv1.RoleSpec{{Name: "Reporter"}} },
			`spec.roles[0].name in body should match '^[a-z_][a-z0-9_]*$'`},
		{"a role twice", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Roles = []regentv1.RoleSpec{{Name: "reporter"}, {Name: "reporter", Login: ptr.To(false)}}
		}, "Duplicate value"},
		{"a connection limit under -1", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Roles = []regentv1.RoleSpec{{Name: "reporter", ConnectionLimit: ptr.To[int32](-2)}}
		}, "should be greater than or equal to -1"},
		{"ensure neither Present nor Absent", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Roles = []regentv1.RoleSpec{{Name: "reporter", Ensure: "Gone"}}
		}, `supported values: "Present", "Absent"`},
		{"the bootstrap database declared", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Databases = []regentv1.DatabaseSpec{{Name: "app"}}
		}, "spec.databases cannot declare the bootstrap database"},
		{"PostgreSQL's own database declared", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Databases = []regentv1.DatabaseSpec{{Name: "template1"}}
		}, "postgres, template0 and template1 are PostgreSQL's own databases"},
		{"lease too short", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Failover.LeaseDurationSeconds = ptr.To[int32](1)
		}, "spec.failover.leaseDurationSeconds: Invalid value: 1: spec.failover.leaseDurationSeconds in body should be greater than or equal to 3"},
		{"certificates of a few seconds", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.TLS.CertificateLifetime = &metav1.Duration{Duration: 30 * time.Second}
		}, "tls.certificateLifetime must be between 1m and 8760h"},
		{"certificates of ten years", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.TLS.CertificateLifetime = &metav1.Duration{Duration: 87600 * time.Hour}
		}, "tls.certificateLifetime must be between 1m and 8760h"},
		{"an object store endpoint with a path", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Backup.ObjectStore = &regentv1.ObjectStoreSpec{Endpoint: "https://s3.example.com/bucket", Bucket: "backups",
				Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}
		}, "objectStore.endpoint must be http(s)://host[:port], without a path"},
		{"an object store endpoint without a scheme", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Backup.ObjectStore = &regentv1.ObjectStoreSpec{Endpoint: "s3.example.com", Bucket: "backups",
				Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}}
		}, "objectStore.endpoint must be http(s)://host[:port], without a path"},
		{"retention by window and count", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Backup.Retention = &regentv1.RetentionSpec{RecoveryWindow: "7d", Backups: ptr.To[int32](3)}
		}, "retention takes recoveryWindow or backups, not both"},
		{"a recovery window in minutes", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Backup.Retention = &regentv1.RetentionSpec{RecoveryWindow: "90m"}
		}, "spec.backup.retention.recoveryWindow"},
		{"two recovery targets", "", func(rs *regentv1.ReplicaSet) {
			rs.Spec.Bootstrap.Recovery = &regentv1.RecoverySpec{
				ObjectStore: regentv1.ObjectStoreSpec{Endpoint: "https://s3.example.com", Bucket: "backups",
					Credentials: regentv1.ObjectStoreCredentials{SecretName: "s3"}},
				TargetLSN: "0/3000000", TargetName: "before-migration"}
		}, "recovery takes at most one of targetTime, targetLSN and targetName"},
		{"name that cannot name a Service", "db.main", nil,
			"metadata.name must be at most 50 lower-case letters"},
		{"name too long for its Services", "a23456789012345678901234567890123456789012345678901", nil,
			"metadata.name must be at most 50 lower-case letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.rsName
			if name == "" {
				name = "bad"
			}
			rs := newReplicaSet(ns, name)
			if tt.mutate != nil {
				tt.mutate(rs)
			}
			err := k8s.Create(t.Context(), rs)
			g := NewWithT(t)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.message))
		})
	}
}

func TestInvalidChangesAreRefused(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Storage.Size = "2Gi"
		rs.Spec.Storage.StorageClassName = ptr.To("fast")
	}))
	tests := []struct {
		name    string
		mutate  func(*regentv1.ReplicaSet)
		message string
	}{
		{"shrink storage", func(rs *regentv1.ReplicaSet) { rs.Spec.Storage.Size = "1Gi" },
			"storage.size cannot shrink"},
		{"shrink storage, in other units", func(rs *regentv1.ReplicaSet) { rs.Spec.Storage.Size = "2000Mi" },
			"storage.size cannot shrink"},
		{"change storage class", func(rs *regentv1.ReplicaSet) { rs.Spec.Storage.StorageClassName = ptr.To("slow") },
			"storage.storageClassName cannot change after creation"},
		{"drop storage class", func(rs *regentv1.ReplicaSet) { rs.Spec.Storage.StorageClassName = nil },
			"storage.storageClassName cannot change after creation"},
		{"rename the database", func(rs *regentv1.ReplicaSet) { rs.Spec.Bootstrap.Database = "other" },
			"bootstrap cannot change after creation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			err := update(t, rs.DeepCopy(), tt.mutate)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.message))
		})
	}

	t.Run("grow storage and change mode", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(update(t, rs.DeepCopy(), func(rs *regentv1.ReplicaSet) {
			rs.Spec.Storage.Size = "5Gi"
			rs.Spec.Replication.Mode = regentv1.ReplicationSync
		})).To(Succeed())
	})
}

func TestScaleSubresource(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db"))
	waitReconciled(t, rs)
	g := NewWithT(t)

	// What `kubectl scale dbrs/db --replicas=N` sends.
	scale := &autoscalingv1.Scale{}
	g.Expect(k8s.SubResource("scale").Get(t.Context(), rs, scale)).To(Succeed())
	g.Expect(scale.Spec.Replicas).To(BeEquivalentTo(3))
	g.Expect(scale.Status.Selector).To(Equal("app.kubernetes.io/name=postgres,regent.dev/cluster=db"))

	// The operator writes status meanwhile, so an update can meet a newer
	// resourceVersion: kubectl retries on a conflict, and so does this.
	scaleTo := func(replicas int32) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.SubResource("scale").Get(t.Context(), rs, scale); err != nil {
				return err
			}
			scale.Spec.Replicas = replicas
			return k8s.SubResource("scale").Update(t.Context(), rs, client.WithSubResourceBody(scale))
		})
	}
	err := scaleTo(12)
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("replicas must be between 1 and 9"))

	g.Expect(scaleTo(5)).To(Succeed())
	got := waitReconciled(t, rs)
	g.Expect(got.Spec.Replicas).To(HaveValue(BeEquivalentTo(5)))
	g.Expect(get(t, g, ns, "db", &appsv1.StatefulSet{}).Spec.Replicas).To(HaveValue(BeEquivalentTo(5)))
}

// The sample of the README is accepted as it is.
func TestSampleIsAccepted(t *testing.T) {
	ns := newNamespace(t)
	b, err := os.ReadFile("../config/samples/regent_v1alpha1_replicaset.yaml")
	g := NewWithT(t)
	g.Expect(err).NotTo(HaveOccurred())
	rs := &regentv1.ReplicaSet{}
	g.Expect(yaml.UnmarshalStrict(b, rs)).To(Succeed())
	rs.Namespace = ns
	g.Expect(k8s.Create(t.Context(), rs)).To(Succeed())
	got := waitReconciled(t, rs)
	g.Expect(got.Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	g.Expect(got.Status.Leader).To(Equal(rs.Name + "-0"))
}
