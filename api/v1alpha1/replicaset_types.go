package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReplicaSetSpec is the desired state of a leader-follower PostgreSQL cluster.
//
// +kubebuilder:validation:XValidation:rule="!has(self.roles) || self.roles.all(r, r.name != (has(self.bootstrap) && has(self.bootstrap.owner) ? self.bootstrap.owner : 'app'))",message="spec.roles cannot declare the bootstrap owner: Regent manages it and its Secret <name>-app"
// +kubebuilder:validation:XValidation:rule="!has(self.databases) || self.databases.all(d, d.name != (has(self.bootstrap) && has(self.bootstrap.database) ? self.bootstrap.database : 'app'))",message="spec.databases cannot declare the bootstrap database: Regent manages it"
// +kubebuilder:validation:XValidation:rule="!has(self.replication) || !has(self.replication.mode) || self.replication.mode != 'Sync' || (has(self.replication.syncReplicas) ? self.replication.syncReplicas : 1) < (has(self.replicas) ? self.replicas : 3)",message="replication.syncReplicas must be less than replicas in Sync mode: the leader can wait for at most replicas-1 followers"
type ReplicaSetSpec struct {
	// replicas is the number of PostgreSQL pods: one leader and replicas-1
	// followers. Between 1 and 9; default 3.
	// +kubebuilder:default=3
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 9",message="replicas must be between 1 and 9"
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// postgres configures the database container.
	// +kubebuilder:default={}
	// +optional
	Postgres PostgresSpec `json:"postgres,omitempty"`

	// storage configures each pod's data volume (PGDATA).
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// replication chooses how commits wait for followers.
	// +kubebuilder:default={}
	// +optional
	Replication ReplicationSpec `json:"replication,omitempty"`

	// failover tunes automatic failover.
	// +kubebuilder:default={}
	// +optional
	Failover FailoverSpec `json:"failover,omitempty"`

	// bootstrap names the application database and its owner, created with
	// the cluster. Cannot change after creation.
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="bootstrap cannot change after creation: the database and its owner already exist"
	// +optional
	Bootstrap BootstrapSpec `json:"bootstrap,omitempty"`

	// roles are PostgreSQL roles the operator keeps on the leader: created,
	// changed to match, dropped with ensure: Absent. status.roles says how
	// each one went.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Roles []RoleSpec `json:"roles,omitempty"`

	// databases are databases the operator keeps on the leader, with their
	// owners and extensions; status.databases says how each one went.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Databases []DatabaseSpec `json:"databases,omitempty"`

	// affinity replaces the default scheduling preference, which spreads the
	// pods over nodes (preferred anti-affinity on kubernetes.io/hostname).
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints are copied to the pods as they are; their
	// label selectors should select this cluster's pods
	// (regent.dev/cluster=<name>). Default none.
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=topologyKey
	// +listMapKey=whenUnsatisfiable
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// podDisruptionBudget limits voluntary evictions (node drains) to one pod
	// of the cluster at a time. Default enabled.
	// +kubebuilder:default={}
	// +optional
	PodDisruptionBudget PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitempty"`

	// networkPolicy says who may reach PostgreSQL's port when the operator
	// runs with network policies on (the chart's networkPolicy.enabled).
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// tls tunes the certificates the operator issues from the cluster's
	// own CA: every member's, for replication, the agents' API and
	// PostgreSQL's client connections.
	// +kubebuilder:default={}
	// +optional
	TLS TLSSpec `json:"tls,omitempty"`

	// backup ships the WAL and base backups to object storage, for
	// point-in-time recovery (docs/backup.md).
	// +optional
	Backup BackupConfiguration `json:"backup,omitempty"`
}

// NetworkPolicySpec says who may reach the cluster's PostgreSQL port. The
// relay and agent ports are open only to the cluster's own pods and the
// operator, whatever this says (docs/architecture.md, "Who may reach the
// data").
type NetworkPolicySpec struct {
	// postgresFrom are the sources allowed to port 5432, as in a
	// NetworkPolicy's ingress rule; empty allows every source (TLS and
	// passwords still apply).
	// +kubebuilder:validation:MaxItems=32
	// +optional
	PostgresFrom []networkingv1.NetworkPolicyPeer `json:"postgresFrom,omitempty"`
}

// TLSSpec tunes the cluster's certificates (docs/architecture.md, "Who may
// reach the data").
type TLSSpec struct {
	// certificateLifetime is how long a member's certificate is valid. The
	// operator renews it once two thirds of its life have passed, and the
	// agent and PostgreSQL load the new one without a restart. Shorter
	// limits how long a stolen key is good for; longer rides out a longer
	// outage of the operator. Between 1m and 8760h; default 2160h (90
	// days).
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('8760h')",message="tls.certificateLifetime must be between 1m and 8760h"
	// +optional
	CertificateLifetime *metav1.Duration `json:"certificateLifetime,omitempty"`
}

// PostgresSpec configures the PostgreSQL container.
type PostgresSpec struct {
	// image is the PostgreSQL container image. The operator injects its own
	// binary, so an unmodified PostgreSQL image works. Default: the
	// operator's --postgres-image flag.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// parameters are PostgreSQL settings (GUCs) written to postgresql.conf,
	// as name: value strings. The settings Regent owns for replication,
	// fencing and networking are refused, one rule each (a rule per name
	// keeps the CEL cost constant, and the error names each one). Default
	// none.
	// +kubebuilder:validation:MaxProperties=256
	// +kubebuilder:validation:XValidation:rule="!has(self.listen_addresses)",message="listen_addresses is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.port)",message="port is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.unix_socket_directories)",message="unix_socket_directories is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.data_directory)",message="data_directory is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.config_file)",message="config_file is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.hba_file)",message="hba_file is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.ident_file)",message="ident_file is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.primary_conninfo)",message="primary_conninfo is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.primary_slot_name)",message="primary_slot_name is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.synchronous_standby_names)",message="synchronous_standby_names is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.archive_mode)",message="archive_mode is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.archive_command)",message="archive_command is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.restore_command)",message="restore_command is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.archive_cleanup_command)",message="archive_cleanup_command is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.recovery_target_timeline)",message="recovery_target_timeline is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.hot_standby)",message="hot_standby is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.wal_log_hints)",message="wal_log_hints is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.full_page_writes)",message="full_page_writes is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.restart_after_crash)",message="restart_after_crash is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!has(self.cluster_name)",message="cluster_name is managed by Regent and cannot be set"
	// +kubebuilder:validation:XValidation:rule="!('synchronous_commit' in self) || self['synchronous_commit'] in ['on', 'remote_write', 'remote_apply']",message="synchronous_commit must be on, remote_write or remote_apply: off and local acknowledge commits that no follower and no fencing gate has confirmed"
	// +kubebuilder:validation:XValidation:rule="!('wal_level' in self) || self['wal_level'] in ['replica', 'logical']",message="wal_level must be replica or logical: followers need at least replica"
	// +optional
	Parameters map[string]string `json:"parameters,omitempty"`

	// resources are the PostgreSQL container's compute requests and limits.
	// Default none.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// PVCRetentionPolicy says what happens to the data volumes when the cluster is
// deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type PVCRetentionPolicy string

const (
	// PVCRetain keeps the PersistentVolumeClaims after the ReplicaSet is deleted.
	PVCRetain PVCRetentionPolicy = "Retain"
	// PVCDelete deletes the PersistentVolumeClaims with the ReplicaSet.
	PVCDelete PVCRetentionPolicy = "Delete"
)

// StorageSpec configures each pod's PersistentVolumeClaim.
//
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !has(oldSelf.size) || !isQuantity(self.size) || !isQuantity(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",message="storage.size cannot shrink: PostgreSQL data volumes can only grow"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName cannot change after creation: existing volumes cannot move to another class"
type StorageSpec struct {
	// size is the capacity requested for each pod's data volume, as a
	// Kubernetes quantity such as 10Gi. It can grow (when the StorageClass
	// allows volume expansion) but never shrink. Default 1Gi.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",message="storage.size must be a positive quantity such as 10Gi"
	// +optional
	Size string `json:"size,omitempty"`

	// storageClassName is the StorageClass of the data volumes. Default: the
	// cluster's default StorageClass. Cannot change after creation.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// pvcRetentionPolicy says whether the data volumes outlive the
	// ReplicaSet: Retain (default) keeps them, so a cluster recreated under
	// the same name finds its data; Delete removes them with it.
	// +kubebuilder:default=Retain
	// +optional
	PVCRetentionPolicy PVCRetentionPolicy `json:"pvcRetentionPolicy,omitempty"`
}

// ReplicationMode chooses when a commit is acknowledged.
// +kubebuilder:validation:Enum=Async;Sync
type ReplicationMode string

const (
	// ReplicationAsync acknowledges a commit once the leader has it (and, for
	// fencing, while the leader's lease is valid). A failover may lose up to
	// failover.maxLagBytes of acknowledged commits.
	ReplicationAsync ReplicationMode = "Async"
	// ReplicationSync acknowledges a commit once syncReplicas followers have
	// it. A failover loses no acknowledged commit.
	ReplicationSync ReplicationMode = "Sync"
)

// DataDurability says whether Sync-mode writes block when too few followers
// are up.
// +kubebuilder:validation:Enum=Required;Preferred
type DataDurability string

const (
	// DataDurabilityRequired blocks commits until syncReplicas followers
	// confirm them, even when that many are not available.
	DataDurabilityRequired DataDurability = "Required"
	// DataDurabilityPreferred lowers the quorum to the followers left once
	// others have been unready for longer than the lease duration, so
	// writes go on with fewer copies.
	DataDurabilityPreferred DataDurability = "Preferred"
)

// ReplicationSpec chooses how commits wait for followers.
//
// +kubebuilder:validation:XValidation:rule="!has(self.dataDurability) || (has(self.mode) && self.mode == 'Sync')",message="replication.dataDurability applies only to mode Sync"
type ReplicationSpec struct {
	// mode is Async (default: commits wait for no follower; a failover may
	// lose up to failover.maxLagBytes) or Sync (commits wait for
	// syncReplicas followers; a failover loses nothing).
	// +kubebuilder:default=Async
	// +optional
	Mode ReplicationMode `json:"mode,omitempty"`

	// syncReplicas is, in Sync mode, how many followers must confirm each
	// commit (synchronous_standby_names = ANY syncReplicas of the
	// followers). Must be less than replicas. Ignored in Async mode.
	// Default 1.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8
	// +optional
	SyncReplicas *int32 `json:"syncReplicas,omitempty"`

	// dataDurability, in Sync mode only: Required (the default there) blocks
	// writes while fewer than syncReplicas followers are up; Preferred
	// lowers the quorum to the followers left once others have been unready
	// for longer than failover.leaseDurationSeconds, so writes go on with
	// fewer copies (none but the leader's when no follower is left).
	// +optional
	DataDurability DataDurability `json:"dataDurability,omitempty"`
}

// FailoverSpec tunes automatic failover.
type FailoverSpec struct {
	// enabled lets the operator promote a follower when the leader is lost.
	// When false, a lost leader stays lost until a person acts (switchover
	// still works). Default true.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// leaseDurationSeconds is how long the leader's Lease stays valid
	// without a renewal, in seconds. The leader renews every second and
	// fences itself after 2/3 of this; a silent leader is replaced after it.
	// Shorter means faster failover of a frozen or cut-off leader and more
	// false failovers on a slow API server. Between 3 and 300; default 10.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=300
	// +optional
	LeaseDurationSeconds *int32 `json:"leaseDurationSeconds,omitempty"`

	// maxLagBytes is, in Async mode, the most WAL (in bytes) a follower may
	// lag the leader's last known position and still be promoted
	// automatically: the data-loss budget of a failover. Default 1048576
	// (1 MiB).
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxLagBytes *int64 `json:"maxLagBytes,omitempty"`

	// delaySeconds is an extra wait, in seconds, after the leader is known
	// lost and before a follower is promoted: time for a leader to come back
	// on its own. Between 0 and 3600; default 0.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	DelaySeconds *int32 `json:"delaySeconds,omitempty"`

	// failsafe lets the leader keep taking writes while it cannot reach the
	// API server (a control-plane upgrade, an etcd stall, a network cut),
	// for as long as every follower confirms, over the pods' mutually
	// authenticated connections, that it still follows this leader and has
	// not seen the epoch revoked. When false, a leader that cannot renew its
	// Lease stops writes at 2/3 of the lease. What it costs: a failover of
	// a leader that stopped renewing takes one more step (revoke, then
	// seal), and waits up to 2 s longer when the old leader was running on
	// its followers' confirmations (docs/protocol.md). Default true.
	// +kubebuilder:default=true
	// +optional
	Failsafe *bool `json:"failsafe,omitempty"`
}

// BootstrapSpec names the application database created with the cluster.
type BootstrapSpec struct {
	// database is the application database's name. Default app.
	// +kubebuilder:default=app
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +optional
	Database string `json:"database,omitempty"`

	// owner is the role that owns the application database; its password is
	// generated into the Secret <name>-app. Default app.
	// +kubebuilder:default=app
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('pg_') && !(self in ['postgres', 'regent_replication'])",message="bootstrap.owner cannot be a reserved role (pg_*, postgres, regent_replication)"
	// +optional
	Owner string `json:"owner,omitempty"`

	// recovery builds the first member from a backup in object storage,
	// recovered to a target, instead of an empty database.
	// +optional
	Recovery *RecoverySpec `json:"recovery,omitempty"`
}

// PodDisruptionBudgetSpec configures the cluster's PodDisruptionBudget.
type PodDisruptionBudgetSpec struct {
	// enabled creates a PodDisruptionBudget that lets voluntary disruptions
	// (drains) take at most one pod of the cluster at a time. Default true.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// Phase is a one-word summary of the cluster for `kubectl get dbrs`.
// +kubebuilder:validation:Enum=Creating;Healthy;Degraded;Unavailable;FailingOver
type Phase string

const (
	// PhaseCreating means the cluster has not yet had a ready leader.
	PhaseCreating Phase = "Creating"
	// PhaseHealthy means a ready leader and every replica ready.
	PhaseHealthy Phase = "Healthy"
	// PhaseDegraded means a ready leader, but not every replica is ready.
	PhaseDegraded Phase = "Degraded"
	// PhaseUnavailable means no ready leader; writes are not served.
	PhaseUnavailable Phase = "Unavailable"
	// PhaseFailingOver means the operator is moving leadership.
	PhaseFailingOver Phase = "FailingOver"
)

// MemberRole is a pod's confirmed role, from its regent.dev/role label.
// +kubebuilder:validation:Enum=Leader;Follower;Unknown
type MemberRole string

const (
	// RoleLeader means the pod is labelled leader at the current epoch.
	RoleLeader MemberRole = "Leader"
	// RoleFollower means the pod is labelled follower.
	RoleFollower MemberRole = "Follower"
	// RoleUnknown means the pod's role is not confirmed (no role label, or a
	// leader label from an older epoch).
	RoleUnknown MemberRole = "Unknown"
)

// MemberStatus is what the operator observed of one pod.
type MemberStatus struct {
	// name is the pod's name.
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// role is the pod's confirmed role.
	// +optional
	Role MemberRole `json:"role,omitempty"`

	// ready is the pod's Ready condition.
	// +optional
	Ready bool `json:"ready,omitempty"`

	// timeline is the PostgreSQL timeline the member reports.
	// +optional
	Timeline *int64 `json:"timeline,omitempty"`

	// receivedLSN is the last WAL position the member received (followers)
	// or wrote (leader), as PostgreSQL prints it (e.g. 0/3000060).
	// +kubebuilder:validation:MaxLength=32
	// +optional
	ReceivedLSN string `json:"receivedLSN,omitempty"`

	// replayedLSN is the last WAL position the member replayed.
	// +kubebuilder:validation:MaxLength=32
	// +optional
	ReplayedLSN string `json:"replayedLSN,omitempty"`

	// lagBytes is how far, in bytes of WAL, the member's received position
	// is behind the leader's.
	// +optional
	LagBytes *int64 `json:"lagBytes,omitempty"`

	// diskUsedBytes and diskCapacityBytes are the member's data volume's
	// use and size, as its filesystem reports them.
	// +optional
	DiskUsedBytes *int64 `json:"diskUsedBytes,omitempty"`
	// +optional
	DiskCapacityBytes *int64 `json:"diskCapacityBytes,omitempty"`

	// eligible says whether a follower may be promoted now.
	// +optional
	Eligible *bool `json:"eligible,omitempty"`

	// reason says why a follower is not eligible.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reason string `json:"reason,omitempty"`
}

// FailoverKind tells an automatic failover from a requested switchover and
// from a promotion a person forced.
// +kubebuilder:validation:Enum=Failover;Switchover;ForcedFailover
type FailoverKind string

const (
	// FailoverKindFailover means the leader was lost and a follower promoted.
	FailoverKindFailover FailoverKind = "Failover"
	// FailoverKindSwitchover means a person asked for a planned handover.
	FailoverKindSwitchover FailoverKind = "Switchover"
	// FailoverKindForced means a person forced the promotion of a pod
	// (regent.dev/promote with regent.dev/accept-data-loss=true) against the
	// election's rules.
	FailoverKindForced FailoverKind = "ForcedFailover"
)

// FailoverRecord is the receipt of the last leadership change.
type FailoverRecord struct {
	// kind is Failover, Switchover or ForcedFailover.
	// +required
	Kind FailoverKind `json:"kind"`

	// from is the old leader pod.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	From string `json:"from,omitempty"`

	// to is the new leader pod.
	// +kubebuilder:validation:MaxLength=253
	// +required
	To string `json:"to"`

	// epoch is the new leadership term.
	// +required
	Epoch int64 `json:"epoch"`

	// reason is why leadership moved, in a few words.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reason string `json:"reason,omitempty"`

	// startTime is when the operator decided to move leadership.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// endTime is when the new leader was labelled and its Service moved.
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`

	// oldLeaderLSN is the old leader's last known WAL position.
	// +kubebuilder:validation:MaxLength=32
	// +optional
	OldLeaderLSN string `json:"oldLeaderLSN,omitempty"`

	// newLeaderLSN is the new leader's received WAL position at promotion.
	// +kubebuilder:validation:MaxLength=32
	// +optional
	NewLeaderLSN string `json:"newLeaderLSN,omitempty"`

	// estimatedLostBytes is oldLeaderLSN - newLeaderLSN when positive: the
	// most acknowledged WAL that may have been lost (always 0 in Sync mode).
	// +optional
	EstimatedLostBytes *int64 `json:"estimatedLostBytes,omitempty"`
}

// ReplicaSetStatus is the observed state of the cluster. Only the operator
// writes it.
type ReplicaSetStatus struct {
	// observedGeneration is the spec generation the operator last fully
	// reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Available, Progressing, Degraded, FailingOver.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// phase is a one-word summary for `kubectl get`.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// leader is the pod that holds leadership (the Lease holder).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Leader string `json:"leader,omitempty"`

	// epoch is the current leadership term (the Lease's transitions). It
	// grows by one at every change of leader.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`

	// replicas is the number of pods that exist.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of pods that are ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// ready is readyReplicas/spec.replicas, for `kubectl get`.
	// +kubebuilder:validation:MaxLength=8
	// +optional
	Ready string `json:"ready,omitempty"`

	// selector is the label selector of the cluster's pods, for the scale
	// subresource.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Selector string `json:"selector,omitempty"`

	// maxLagBytes is the largest lagBytes among the followers.
	// +optional
	MaxLagBytes *int64 `json:"maxLagBytes,omitempty"`

	// members are the cluster's pods, by name.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Members []MemberStatus `json:"members,omitempty"`

	// lastFailover is the receipt of the last change of leader.
	// +optional
	LastFailover *FailoverRecord `json:"lastFailover,omitempty"`

	// certificates says when the cluster's certificates expire.
	// +optional
	Certificates *CertificatesStatus `json:"certificates,omitempty"`

	// archive is the WAL archiving and the base backups in the object
	// store, when spec.backup.objectStore is set.
	// +optional
	Archive *ArchiveStatus `json:"archive,omitempty"`

	// roles and databases say how each item of spec.roles and
	// spec.databases went on the leader.
	// +optional
	Roles []ManagedObjectStatus `json:"roles,omitempty"`
	// +optional
	Databases []ManagedObjectStatus `json:"databases,omitempty"`
}

// CertificatesStatus says when the cluster's certificates expire.
type CertificatesStatus struct {
	// caExpiresAt is when the cluster's CA expires (Secret <name>-ca).
	CAExpiresAt metav1.Time `json:"caExpiresAt"`
	// expiresAt is when the first member's certificate expires (Secrets
	// <pod>-tls); the operator renews each long before.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
}

// ReplicaSet is a leader-follower PostgreSQL cluster: one leader pod takes
// writes through the <name>-leader Service, the others follow it and serve
// reads through <name>-followers, and the operator promotes the most
// up-to-date safe follower when the leader fails.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=dbrs,categories=regent
// +kubebuilder:printcolumn:name="Leader",type=string,JSONPath=`.status.leader`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.epoch`
// +kubebuilder:printcolumn:name="Max Lag",type=integer,JSONPath=`.status.maxLagBytes`,description="Largest follower lag, in bytes of WAL"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.replication.mode`,priority=1
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`,priority=1
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be at most 50 lower-case letters, digits and '-', starting with a letter: it names the cluster's Services, such as <name>-followers"
type ReplicaSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired cluster.
	// +kubebuilder:default={}
	// +optional
	Spec ReplicaSetSpec `json:"spec,omitempty"`

	// status is the observed cluster.
	// +optional
	Status ReplicaSetStatus `json:"status,omitempty"`
}

// ReplicaSetList is a list of ReplicaSets.
//
// +kubebuilder:object:root=true
type ReplicaSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ReplicaSet `json:"items"`
}
