package v1alpha1

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// OwnedParameters are the PostgreSQL settings Regent writes itself: the CRD
// refuses them in spec.postgres.parameters (the CEL rule there spells out
// the same list, and a test keeps the two in step).
var OwnedParameters = []string{
	"listen_addresses", "port", "unix_socket_directories", "data_directory",
	"config_file", "hba_file", "ident_file", "primary_conninfo",
	"primary_slot_name", "synchronous_standby_names", "archive_mode",
	"archive_command", "restore_command", "archive_cleanup_command",
	"recovery_target_timeline", "hot_standby", "wal_log_hints",
	"full_page_writes", "restart_after_crash", "cluster_name",
}

// The defaults below repeat the CRD's defaults for objects that never went
// through the API server (unit tests, objects built in code).

// DesiredReplicas is spec.replicas, or its default 3.
func (rs *ReplicaSet) DesiredReplicas() int32 {
	if rs.Spec.Replicas == nil {
		return 3
	}
	return *rs.Spec.Replicas
}

// FailsafeEnabled is spec.failover.failsafe, or its default true.
func (rs *ReplicaSet) FailsafeEnabled() bool {
	return rs.Spec.Failover.Failsafe == nil || *rs.Spec.Failover.Failsafe
}

// LeaseDurationSeconds is spec.failover.leaseDurationSeconds, or its
// default 10.
func (rs *ReplicaSet) LeaseDurationSeconds() int32 {
	if rs.Spec.Failover.LeaseDurationSeconds == nil {
		return 10
	}
	return *rs.Spec.Failover.LeaseDurationSeconds
}

// StorageSize is spec.storage.size, or its default 1Gi. The CRD admits only
// valid quantities; an object that bypassed it gets an error.
func (rs *ReplicaSet) StorageSize() (resource.Quantity, error) {
	if rs.Spec.Storage.Size == "" {
		return resource.MustParse("1Gi"), nil
	}
	q, err := resource.ParseQuantity(rs.Spec.Storage.Size)
	if err != nil {
		return q, fmt.Errorf("spec.storage.size %q: %w", rs.Spec.Storage.Size, err)
	}
	return q, nil
}

// PDBEnabled is spec.podDisruptionBudget.enabled, or its default true.
func (rs *ReplicaSet) PDBEnabled() bool {
	return rs.Spec.PodDisruptionBudget.Enabled == nil || *rs.Spec.PodDisruptionBudget.Enabled
}

// PVCRetention is spec.storage.pvcRetentionPolicy, or its default Retain.
func (rs *ReplicaSet) PVCRetention() PVCRetentionPolicy {
	if rs.Spec.Storage.PVCRetentionPolicy == "" {
		return PVCRetain
	}
	return rs.Spec.Storage.PVCRetentionPolicy
}

// AppDatabase is spec.bootstrap.database, or its default app.
func (rs *ReplicaSet) AppDatabase() string {
	if rs.Spec.Bootstrap.Database == "" {
		return "app"
	}
	return rs.Spec.Bootstrap.Database
}

// AppOwner is spec.bootstrap.owner, or its default app.
func (rs *ReplicaSet) AppOwner() string {
	if rs.Spec.Bootstrap.Owner == "" {
		return "app"
	}
	return rs.Spec.Bootstrap.Owner
}

// CertificateLifetime is spec.tls.certificateLifetime, or its default of
// 90 days.
func (rs *ReplicaSet) CertificateLifetime() time.Duration {
	if rs.Spec.TLS.CertificateLifetime == nil || rs.Spec.TLS.CertificateLifetime.Duration <= 0 {
		return 90 * 24 * time.Hour
	}
	return rs.Spec.TLS.CertificateLifetime.Duration
}
