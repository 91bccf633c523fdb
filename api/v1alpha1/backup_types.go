package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupConfiguration is the cluster's continuous archiving and base
// backups to object storage (docs/backup.md).
type BackupConfiguration struct {
	// objectStore is where the WAL and the base backups go. Without it the
	// cluster keeps no backup.
	// +optional
	ObjectStore *ObjectStoreSpec `json:"objectStore,omitempty"`

	// schedule takes base backups on a cron schedule (five fields, UTC),
	// such as "0 3 * * *"; empty: only the Backups people create.
	// +kubebuilder:validation:MaxLength=100
	// +optional
	Schedule string `json:"schedule,omitempty"`

	// retention says which base backups, and the WAL they need, the
	// operator keeps in the store; unset keeps everything.
	// +optional
	Retention *RetentionSpec `json:"retention,omitempty"`
}

// ObjectStoreSpec is a place in S3-compatible object storage.
// +kubebuilder:validation:XValidation:rule="self.endpoint.matches('^https?://[^/]+/?$')",message="objectStore.endpoint must be http(s)://host[:port], without a path"
type ObjectStoreSpec struct {
	// endpoint is the store's URL, such as https://s3.eu-west-1.amazonaws.com
	// or http://minio.storage:9000.
	// +kubebuilder:validation:MaxLength=253
	Endpoint string `json:"endpoint"`

	// bucket must exist; Regent does not create it.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`

	// path is the prefix of every key of this cluster in the bucket.
	// Default <namespace>/<name>. Two clusters never share one: the first
	// leader binds it to its database.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`
	// +optional
	Path string `json:"path,omitempty"`

	// region signs the requests; most S3-compatible servers accept any.
	// Default us-east-1.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Region string `json:"region,omitempty"`

	// credentials name the Secret of the access key.
	Credentials ObjectStoreCredentials `json:"credentials"`

	// ca, PEM in a Secret key, is trusted besides the system's roots.
	// +optional
	CA *SecretKeyRef `json:"ca,omitempty"`
}

// ObjectStoreCredentials name a Secret holding an access key.
type ObjectStoreCredentials struct {
	// secretName is a Secret in the cluster's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`

	// accessKeyIDKey is the Secret's key of the access key ID. Default
	// accessKeyId.
	// +kubebuilder:default=accessKeyId
	// +optional
	AccessKeyIDKey string `json:"accessKeyIDKey,omitempty"`

	// secretAccessKeyKey is the Secret's key of the secret access key.
	// Default secretAccessKey.
	// +kubebuilder:default=secretAccessKey
	// +optional
	SecretAccessKeyKey string `json:"secretAccessKeyKey,omitempty"`
}

// SecretKeyRef is one key of a Secret in the cluster's namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// RetentionSpec keeps either a recovery window or a number of backups.
// +kubebuilder:validation:XValidation:rule="!(has(self.recoveryWindow) && has(self.backups))",message="retention takes recoveryWindow or backups, not both"
type RetentionSpec struct {
	// recoveryWindow keeps what recovery to any point in the last window
	// needs: every backup that ended within it, the newest that ended
	// before it, and the WAL from that one on. Such as 7d, 36h.
	// +kubebuilder:validation:Pattern=`^[1-9][0-9]*(d|h)$`
	// +optional
	RecoveryWindow string `json:"recoveryWindow,omitempty"`

	// backups keeps the newest this many base backups, and the WAL from
	// the oldest of them on.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Backups *int32 `json:"backups,omitempty"`
}

// RecoverySpec builds a new cluster's first member from a backup in
// object storage, recovered to a target; its followers are cloned from
// it. The source can be a deleted cluster's store.
// +kubebuilder:validation:XValidation:rule="[has(self.targetTime), has(self.targetLSN), has(self.targetName)].filter(x, x).size() <= 1",message="recovery takes at most one of targetTime, targetLSN and targetName"
type RecoverySpec struct {
	// objectStore is the source: the store and path the backed-up cluster
	// wrote (its spec.backup.objectStore).
	ObjectStore ObjectStoreSpec `json:"objectStore"`

	// backupID names the base backup to start from; default the newest
	// that ended before the target.
	// +kubebuilder:validation:Pattern=`^[0-9]{8}T[0-9]{6}Z$`
	// +optional
	BackupID string `json:"backupID,omitempty"`

	// targetTime recovers to this time (RFC 3339): every transaction
	// committed before it, none after.
	// +optional
	TargetTime *metav1.Time `json:"targetTime,omitempty"`

	// targetLSN recovers to this WAL position (X/Y).
	// +kubebuilder:validation:Pattern=`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`
	// +optional
	TargetLSN string `json:"targetLSN,omitempty"`

	// targetName recovers to a restore point made with
	// pg_create_restore_point().
	// +kubebuilder:validation:MaxLength=63
	// +optional
	TargetName string `json:"targetName,omitempty"`
}

// ArchiveStatus is the cluster's archiving and backups as the operator
// last saw them.
type ArchiveStatus struct {
	// firstRecoverabilityPoint is the earliest time a recovery can reach:
	// the end of the oldest base backup kept.
	// +optional
	FirstRecoverabilityPoint *metav1.Time `json:"firstRecoverabilityPoint,omitempty"`
	// lastArchivedWAL is the newest WAL file in the store and
	// lastArchivedTime when it was shipped: a recovery reaches at most
	// its end (the RPO is the time since).
	// +optional
	LastArchivedWAL string `json:"lastArchivedWAL,omitempty"`
	// +optional
	LastArchivedTime *metav1.Time `json:"lastArchivedTime,omitempty"`
	// pendingWAL counts the leader's WAL files not in the store yet.
	// +optional
	PendingWAL int32 `json:"pendingWAL,omitempty"`
	// lastBackup is the newest completed base backup, and lastBackupTime
	// when it ended.
	// +optional
	LastBackup string `json:"lastBackup,omitempty"`
	// +optional
	LastBackupTime *metav1.Time `json:"lastBackupTime,omitempty"`
	// backups counts the completed base backups in the store.
	// +optional
	Backups int32 `json:"backups,omitempty"`
	// nextScheduledBackup is when the schedule takes the next.
	// +optional
	NextScheduledBackup *metav1.Time `json:"nextScheduledBackup,omitempty"`
}

// BackupSpec names the cluster to back up.
type BackupSpec struct {
	// cluster is the ReplicaSet, in the Backup's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a Backup's cluster cannot change"
	Cluster string `json:"cluster"`
}

// BackupPhase is where a Backup stands.
// +kubebuilder:validation:Enum=Pending;Running;Completed;Failed
type BackupPhase string

// The phases of a Backup.
const (
	BackupPending   BackupPhase = "Pending"
	BackupRunning   BackupPhase = "Running"
	BackupCompleted BackupPhase = "Completed"
	BackupFailed    BackupPhase = "Failed"
)

// BackupObjectStatus is what the operator saw of a Backup.
type BackupObjectStatus struct {
	// +optional
	Phase BackupPhase `json:"phase,omitempty"`
	// id names the backup in the store: base/<id>/ under the cluster's
	// path.
	// +optional
	ID string `json:"id,omitempty"`
	// member is the pod it was taken on; fromStandby says whether that
	// pod was a follower.
	// +optional
	Member string `json:"member,omitempty"`
	// +optional
	FromStandby bool `json:"fromStandby,omitempty"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
	// timeline, startLSN and endLSN: the WAL the backup spans; restored,
	// it is consistent at endLSN.
	// +optional
	Timeline int64 `json:"timeline,omitempty"`
	// +optional
	StartLSN string `json:"startLSN,omitempty"`
	// +optional
	EndLSN string `json:"endLSN,omitempty"`
	// bytes is the data read from PostgreSQL; storedBytes what the store
	// holds (compressed).
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
	// +optional
	StoredBytes int64 `json:"storedBytes,omitempty"`
	// error says why it failed.
	// +optional
	Error string `json:"error,omitempty"`
}

// Backup is one base backup of a ReplicaSet into its object store
// (spec.backup.objectStore). Create one to take a backup now; the
// schedule (spec.backup.schedule) creates them too. Deleting a Backup
// leaves the store alone: retention (spec.backup.retention) removes
// backups from the store.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dbbackup
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="ID",type=string,JSONPath=`.status.id`
// +kubebuilder:printcolumn:name="Member",type=string,JSONPath=`.status.member`
// +kubebuilder:printcolumn:name="Stored",type=integer,JSONPath=`.status.storedBytes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Backup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BackupSpec `json:"spec"`
	// +optional
	Status BackupObjectStatus `json:"status,omitempty"`
}

// BackupList is a list of Backups.
// +kubebuilder:object:root=true
type BackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Backup `json:"items"`
}
