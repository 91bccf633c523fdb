// Package names derives every name, label, annotation, port and path that
// several parts of Regent must agree on (docs/architecture.md). Nothing
// else spells them out.
package names

import (
	"fmt"
	"strconv"
	"strings"
)

// Labels on every object Regent creates.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelCluster   = "regent.dev/cluster"

	// LabelRole is a pod's confirmed role: RoleLeader or RoleFollower. A
	// pod whose role is not confirmed has no role label.
	LabelRole = "regent.dev/role"
	// LabelEpoch, on the leader pod, is the leadership term it leads.
	LabelEpoch = "regent.dev/epoch"

	// AppName is the value of LabelName: the engine Regent runs.
	AppName = "postgres"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "regent"

	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// Annotations with a meaning in the leadership protocol (docs/protocol.md).
const (
	// AnnotationSealedEpoch on the Lease: epoch n is sealed, followers
	// accept no more WAL of it.
	AnnotationSealedEpoch = "regent.dev/sealed-epoch"
	// AnnotationSyncStandbys on the Lease: the synchronous_standby_names
	// the leader must run with (written by the operator; absent means
	// none).
	AnnotationSyncStandbys = "regent.dev/synchronous-standby-names"
	// AnnotationSyncStandbysPrevious on the Lease: the value the operator
	// replaced in this epoch, while commits it acknowledged may not yet be
	// on every standby the new value names; the election honours both.
	// AnnotationSyncStandbysPreviousUntil: the leader's WAL position when it
	// was seen running the new value; once every standby named by the new
	// value has received it, the previous value is forgotten.
	AnnotationSyncStandbysPrevious      = "regent.dev/previous-synchronous-standby-names"
	AnnotationSyncStandbysPreviousUntil = "regent.dev/previous-synchronous-standby-names-until"
	// AnnotationReleasedLSN on a released Lease: the old leader's final WAL
	// position after a clean stop (empty after a crash).
	AnnotationReleasedLSN = "regent.dev/released-lsn"
	// AnnotationReleasedBy on a released Lease: the pod that released it,
	// so that whoever reads the Lease later (an operator restarted, or a
	// ReplicaSet recreated over its kept data) knows who led last.
	AnnotationReleasedBy = "regent.dev/released-by"
	// AnnotationHandoverTo on the Lease: the operator, having checked the
	// target of a switchover, asks the leader's agent to stop cleanly and
	// release. (The same key as the ReplicaSet's request, below.)
	AnnotationHandoverTo = "regent.dev/switchover-to"
	// AnnotationSealedAt on the Lease: when the operator sealed the epoch
	// (RFC 3339, that operator's clock), for people and the failover
	// record; operators time the followers' reports from when they saw
	// the seal, on their own clocks.
	AnnotationSealedAt = "regent.dev/sealed-at"
	// AnnotationLeaderLSN on the Lease: the leader's WAL position as of
	// its last renewal, with the epoch it renewed ("<epoch>:<lsn>"), so
	// that the Async bound (maxLagBytes) survives an operator restart.
	AnnotationLeaderLSN = "regent.dev/leader-lsn"
	// AnnotationSystemIdentifier on the Lease: the cluster's database
	// system identifier (pg_control), recorded once by the first leader
	// that renews with one: no member starts, follows or is elected with
	// another database's data.
	AnnotationSystemIdentifier = "regent.dev/system-identifier"
	// AnnotationFailsafe on the Lease: "true" when the spec lets the
	// leader write on its followers' confirmations while it cannot reach
	// the API server (written by the operator).
	AnnotationFailsafe = "regent.dev/failsafe"
	// AnnotationFailsafeReplicas on the Lease: the member count whose
	// confirmations the leader's failsafe needs (written by the leader with
	// its renewals; absent: it uses no failsafe).
	AnnotationFailsafeReplicas = "regent.dev/failsafe-replicas"
	// AnnotationRevokedEpoch on the Lease: epoch n is revoked, its
	// followers confirm nothing more for it, nobody renews it; the seal
	// follows once no failsafe of it can be left (written by the operator).
	AnnotationRevokedEpoch = "regent.dev/revoked-epoch"
	// AnnotationFirstEpoch on the Lease: the cluster's first epoch, the
	// only one whose leader may create the data (initdb, or a restore);
	// absent means 1. A restored cluster starts above its source's
	// timelines, as its first timeline is its first epoch.
	AnnotationFirstEpoch = "regent.dev/first-epoch"
)

// AnnotationBackup on a member's pod: the operator asks its agent for the
// base backup of this ID (docs/backup.md).
const AnnotationBackup = "regent.dev/backup"

// AnnotationSwitchoverTo on the ReplicaSet: a person asks to hand
// leadership to this pod (kubectl annotate dbrs/<rs> regent.dev/switchover-to=<pod>).
const AnnotationSwitchoverTo = "regent.dev/switchover-to"

// AnnotationPromote and AnnotationAcceptDataLoss on the ReplicaSet, set
// together (…/accept-data-loss=true), are the escape hatch of an election
// that cannot finish: once the lost leader's epoch is sealed, the named pod
// is promoted as soon as it reports, whatever the election's rules say.
const (
	AnnotationPromote        = "regent.dev/promote"
	AnnotationAcceptDataLoss = "regent.dev/accept-data-loss"
)

// Ports.
const (
	PortPostgres  = 5432
	PortRelay     = 5433
	PortAgentHTTP = 8008

	PortNamePostgres  = "postgres"
	PortNameRelay     = "relay"
	PortNameAgentHTTP = "agent-http"
)

// Containers, volumes and paths of the pod (docs/architecture.md).
const (
	ContainerBootstrap = "bootstrap"
	ContainerPostgres  = "postgres"
	ContainerAgent     = "agent"

	VolumeData    = "pgdata"
	VolumeRun     = "regent-run"
	VolumeTmp     = "tmp"
	VolumeSecrets = "secrets"
	VolumeSAToken = "sa-token"

	// RunDir is where the regent-run emptyDir is mounted in every container.
	RunDir = "/regent"
	// BinDir holds the regent binary that the bootstrap init container
	// copies for the postgres container, whose image does not have it.
	BinDir = RunDir + "/bin"
	// BinaryPath is the copied binary.
	BinaryPath = BinDir + "/regent"
	// SocketDir holds instance's API socket, PostgreSQL's socket and the
	// agent's relay socket.
	SocketDir = RunDir + "/run"
	// ImageBinaryPath is where the regent image keeps its binary (on PATH).
	ImageBinaryPath = "/usr/local/bin/regent"

	DataMountPath = "/var/lib/postgresql/data"
	// PGData is PostgreSQL's data directory: a subdirectory of the volume,
	// so that a volume's lost+found does not upset initdb.
	PGData           = DataMountPath + "/pgdata"
	SecretsMountPath = "/etc/regent/secrets" //nolint:gosec // G101: a path, not a credential
	// WALArchiveDirName is the pod's WAL archive, beside PGDATA on the data
	// volume (`regent wal-push` fills it).
	WALArchiveDirName = "wal-archive"
	// AgentSocketName is the agent's local API socket in the run
	// directory (`regent wal-fetch` asks it for WAL).
	AgentSocketName = "agent.sock"
	// SATokenMountPath is the standard service account path, so client-go's
	// in-cluster config finds the agent's token.
	SATokenMountPath = "/var/run/secrets/kubernetes.io/serviceaccount" //nolint:gosec // G101: a path, not a credential
	TmpMountPath     = "/tmp"

	// PostgresUID is the uid and gid PostgreSQL runs as (the postgres image's).
	PostgresUID = 999
)

// EnvSharedPodNetwork is set to "true" by a node whose pods share one
// network namespace (the local cluster's process kubelet, the data plane's
// tests): PostgreSQL then listens on the pod's IP alone, not also on the
// pod's loopback, which is not the pod's own there.
const EnvSharedPodNetwork = "REGENT_SHARED_POD_NETWORK"

// EnvPGParameters carries spec.postgres.parameters, as a JSON object, to
// `regent instance` in the postgres container.
const EnvPGParameters = "REGENT_PG_PARAMETERS"

// EnvStorageSize carries the data volume's size (spec.storage.size, a
// quantity) to `regent instance`, which sizes the WAL from it.
const EnvStorageSize = "REGENT_STORAGE_SIZE"

// EnvAppDatabase and EnvAppOwner tell the agent which application database
// and role to create with the first leader (spec.bootstrap).
const (
	EnvAppDatabase = "REGENT_APP_DATABASE"
	EnvAppOwner    = "REGENT_APP_OWNER"
)

// Database roles Regent creates.
const (
	SuperuserName   = "postgres"
	ReplicationUser = "regent_replication"
)

// CommitGate is the application_name of the leader's agent as a
// replication client of its own PostgreSQL: in Async mode the leader's one
// synchronous standby, which acknowledges only while the lease is valid
// (docs/protocol.md). No pod's slot can take the name (pods end in an ordinal).
const CommitGate = "regent_gate"

// Labels returns the labels every object of cluster carries.
func Labels(cluster string) map[string]string {
	return map[string]string{
		LabelName:      AppName,
		LabelInstance:  cluster,
		LabelManagedBy: ManagedBy,
		LabelCluster:   cluster,
	}
}

// SelectorLabels selects the pods of cluster. It is the StatefulSet's
// selector, so it must never change.
func SelectorLabels(cluster string) map[string]string {
	return map[string]string{LabelName: AppName, LabelCluster: cluster}
}

// LeaderSelector selects the leader pod of cluster at epoch: a pod left with
// a stale leader label from an older epoch is never selected.
func LeaderSelector(cluster string, epoch int64) map[string]string {
	s := SelectorLabels(cluster)
	s[LabelRole] = RoleLeader
	s[LabelEpoch] = strconv.FormatInt(epoch, 10)
	return s
}

// FollowerSelector selects the confirmed followers of cluster.
func FollowerSelector(cluster string) map[string]string {
	s := SelectorLabels(cluster)
	s[LabelRole] = RoleFollower
	return s
}

// Names of the objects of a cluster.

// StatefulSet is the StatefulSet's name: the cluster's own.
func StatefulSet(cluster string) string { return cluster }

// PodsService is the headless Service that gives pods stable DNS names.
func PodsService(cluster string) string { return cluster + "-pods" }

// LeaderService is the Service clients write through.
func LeaderService(cluster string) string { return cluster + "-leader" }

// FollowersService is the Service clients read from.
func FollowersService(cluster string) string { return cluster + "-followers" }

// Lease is the coordination.k8s.io Lease whose holder is the leader.
func Lease(cluster string) string { return cluster + "-leader" }

// PodDisruptionBudget is the cluster's PodDisruptionBudget.
func PodDisruptionBudget(cluster string) string { return cluster }

// NetworkPolicy names the cluster's NetworkPolicy.
func NetworkPolicy(cluster string) string { return cluster }

// Agent is the name of the agent's ServiceAccount, Role and RoleBinding.
func Agent(cluster string) string { return cluster + "-agent" }

// SuperuserSecret holds the postgres superuser's credentials.
func SuperuserSecret(cluster string) string { return cluster + "-superuser" }

// ReplicationSecret holds the replication role's credentials.
func ReplicationSecret(cluster string) string { return cluster + "-replication" }

// AppSecret holds the application role's credentials and a ready-to-use uri.
func AppSecret(cluster string) string { return cluster + "-app" }

// ManagedSecret holds the roles and databases the operator asks the
// leader's agent to keep (spec.roles, spec.databases), passwords as SCRAM
// verifiers, under the key ManagedKey.
func ManagedSecret(cluster string) string { return cluster + "-managed" }

// ManagedKey is ManagedSecret's key.
const ManagedKey = "managed.json"

// CA names the Secret that holds the cluster's CA (certificate and key)
// and the ConfigMap that publishes its certificate.
func CA(cluster string) string { return cluster + "-ca" }

// PodTLSSecret names the Secret that holds a pod's key and certificate.
func PodTLSSecret(pod string) string { return pod + "-tls" }

// AllPodTLSSecrets names the TLS Secrets of every ordinal a cluster can have.
func AllPodTLSSecrets(cluster string) []string {
	out := AllPods(cluster)
	for i := range out {
		out[i] = PodTLSSecret(out[i])
	}
	return out
}

// Pod is the name of the pod with ordinal i.
func Pod(cluster string, i int) string { return fmt.Sprintf("%s-%d", cluster, i) }

// PVC is the name of the data volume claim of the pod with ordinal i, as the
// StatefulSet controller derives it from the claim template.
func PVC(cluster string, i int) string { return fmt.Sprintf("%s-%s-%d", VolumeData, cluster, i) }

// MaxReplicas is the largest spec.replicas the API accepts.
const MaxReplicas = 9

// AllPods names every pod a cluster can ever have (ordinals 0 to
// MaxReplicas-1), so that RBAC scoped by name survives scaling.
func AllPods(cluster string) []string {
	pods := make([]string, MaxReplicas)
	for i := range pods {
		pods[i] = Pod(cluster, i)
	}
	return pods
}

// Slot is the physical replication slot a follower pod streams from on the
// leader, and its application_name there: the pod's name in the characters
// slot names allow ('-' becomes '_'; pod names have no '_').
func Slot(pod string) string { return strings.ReplaceAll(pod, "-", "_") }

// SlotPod is the pod whose slot is slot (Slot's inverse).
func SlotPod(slot string) string { return strings.ReplaceAll(slot, "_", "-") }

// Ordinal returns the ordinal of pod in cluster, or false when pod is not
// one of cluster's pods.
func Ordinal(cluster, pod string) (int, bool) {
	rest, ok := strings.CutPrefix(pod, cluster+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil
}

// EnvObjectStore carries spec.backup.objectStore's place (endpoint, bucket,
// path, region; objectstore.Config as JSON) to instance; empty means no
// store. Its credentials are files under ObjectStoreSecretsPath.
const EnvObjectStore = "REGENT_OBJECT_STORE"

// EnvRecoveryStore is EnvObjectStore's twin for the store a new cluster
// is restored from (spec.bootstrap.recovery); its credentials are under
// RecoveryStoreSecretsPath.
const EnvRecoveryStore = "REGENT_RECOVERY_STORE"

// EnvClusterUID carries the ReplicaSet's UID to instance, which binds
// the object store's path to it.
const EnvClusterUID = "REGENT_CLUSTER_UID"

// EnvRecovery tells the agent that the cluster's first leader restores a
// backup (spec.bootstrap.recovery: the backup ID and target, as JSON)
// instead of running initdb.
const EnvRecovery = "REGENT_RECOVERY"

// Files of the object stores' credentials in the secrets volume.
const (
	RecoveryStoreSecretsPath = SecretsMountPath + "/recovery-store"
	ObjectStoreSecretsPath   = SecretsMountPath + "/object-store"
	ObjectStoreAccessKeyID   = "access-key-id"
	ObjectStoreSecretKey     = "secret-access-key"
	ObjectStoreCA            = "ca.crt"
)
