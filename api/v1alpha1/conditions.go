package v1alpha1

// Condition types of a ReplicaSet.
const (
	// ConditionAvailable is True while a ready leader serves writes at the
	// current epoch.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while the cluster is being created,
	// scaled or updated, until every replica is ready.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True while the cluster serves writes but not with
	// every replica it should have, or the operator cannot do what the spec
	// asks; the reason says which.
	ConditionDegraded = "Degraded"
	// ConditionFailingOver is True while the operator moves leadership.
	ConditionFailingOver = "FailingOver"
	// ConditionArchiving is True while the leader ships its WAL to the
	// object store (spec.backup.objectStore); absent without one.
	ConditionArchiving = "Archiving"
)

// Condition reasons. They are UpperCamelCase constants so that alerts and
// scripts can match on them.
const (
	// ReasonLeaderReady (Available=True): the leader pod is ready.
	ReasonLeaderReady = "LeaderReady"
	// ReasonNoLeader (Available=False): no pod is labelled leader at the
	// current epoch.
	ReasonNoLeader = "NoLeader"
	// ReasonLeaderNotReady (Available=False): the leader pod is not ready.
	ReasonLeaderNotReady = "LeaderNotReady"

	// ReasonCreating (Progressing=True): the cluster never had all its
	// replicas ready yet.
	ReasonCreating = "Creating"
	// ReasonScaling (Progressing=True): the number of pods differs from
	// spec.replicas.
	ReasonScaling = "Scaling"
	// ReasonReplicasNotReady (Progressing=True): pods exist but are not all
	// ready.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonReconciled (Progressing=False): every child matches the spec and
	// every replica is ready.
	ReasonReconciled = "Reconciled"

	// ReasonAllReplicasReady (Degraded=False): nothing is missing.
	ReasonAllReplicasReady = "AllReplicasReady"
	// ReasonFollowersNotReady (Degraded=True): the leader serves but some
	// followers are not ready, so fewer copies of the data exist.
	ReasonFollowersNotReady = "FollowersNotReady"
	// ReasonDiskFilling: a member's data volume is at least
	// DiskFillingPercent full.
	ReasonDiskFilling = "DiskFilling"
	// ReasonReconcileFailed (Degraded=True): the operator could not apply a
	// child object; the message says which and why.
	ReasonReconcileFailed = "ReconcileFailed"

	// ReasonNameTaken (Degraded=True): an object the cluster needs (a
	// Service, the StatefulSet…) exists under its name and belongs to
	// someone else; the operator does not take it over.
	ReasonNameTaken = "NameTaken"

	// ReasonArchiving (Archiving=True): the leader's WAL reaches the store.
	ReasonArchiving = "Archiving"
	// ReasonObjectStoreInvalid (Archiving=False): the store's Secret or
	// settings cannot be used; the pods run without archiving until they
	// are fixed.
	ReasonObjectStoreInvalid = "ObjectStoreInvalid"
	// ReasonArchivingFailing (Archiving=False): the leader's uploads fail;
	// its archive keeps the WAL, within the volume's budget.
	ReasonArchivingFailing = "ArchivingFailing"
	// ReasonArchivingUnknown (Archiving=Unknown): the leader's agent did
	// not report.
	ReasonArchivingUnknown = "ArchivingUnknown"

	// ReasonIdle (FailingOver=False): no leadership change is in progress.
	ReasonIdle = "Idle"
	// ReasonSealing (FailingOver=True): the leader is lost; the operator
	// seals its epoch so that followers' positions stop moving.
	ReasonSealing = "Sealing"
	// ReasonElecting (FailingOver=True): the epoch is sealed; the operator
	// waits for followers' sealed positions or promotes the winner.
	ReasonElecting = "Electing"
	// ReasonFailoverBlocked (Degraded=True): the leader is lost and no
	// follower can be promoted safely yet; the message says what is
	// missing (a silent follower, lag beyond maxLagBytes…).
	ReasonFailoverBlocked = "FailoverBlocked"
	// ReasonFailoverRefused (Degraded=True): the operator will not change
	// leadership (failover disabled, two pods claim to lead); a person must
	// act.
	ReasonFailoverRefused = "FailoverRefused"
	// ReasonSwitchoverRefused (Degraded=True): a requested switchover was
	// refused; the message says why.
	ReasonSwitchoverRefused = "SwitchoverRefused"
)

// Event reasons the operator records on a ReplicaSet.
const (
	// EventLeaseCreated: the operator created the leadership Lease of a new
	// cluster.
	EventLeaseCreated = "LeaseCreated"
	// EventSecretCreated: the operator generated a credentials Secret.
	EventSecretCreated = "SecretCreated"
	// EventCertificateIssued: the operator made the cluster's CA or issued
	// a member's certificate.
	EventCertificateIssued = "CertificateIssued"
	// EventDiskFilling: a member's data volume passed DiskFillingPercent.
	EventDiskFilling = "DiskFilling"
	// EventStartFailed: a member's PostgreSQL does not start; the note
	// quotes PostgreSQL's reason (a parameter it refuses, say).
	EventStartFailed = "StartFailed"
	// EventRecloned: a member's data was removed and the leader cloned
	// again, because it could not catch up; the note says why.
	EventRecloned = "Recloned"
	// EventLeaderLabelled: the operator labelled the Lease holder as leader.
	EventLeaderLabelled = "LeaderLabelled"
	// EventReconcileFailed: applying a child object failed.
	EventReconcileFailed = "ReconcileFailed"
	// EventFailoverStarted: the leader is lost; its epoch was sealed.
	EventFailoverStarted = "FailoverStarted"
	// EventLeaderPromoted: the Lease moved to a new leader at a new epoch.
	EventLeaderPromoted = "LeaderPromoted"
	// EventFailoverWaiting: a failover waits (for followers' positions, for
	// delaySeconds…); the message says for what.
	EventFailoverWaiting = "FailoverWaiting"
	// EventFailoverRefused: the operator will not fail over (a Warning).
	EventFailoverRefused = "FailoverRefused"
	// EventSwitchoverRequested: the leader was asked to hand over.
	EventSwitchoverRequested = "SwitchoverRequested"
	// EventLeaderUnserved: no Service routes to the leader because the
	// node controller marked its pod not ready (its node stopped
	// reporting) while its agent still leads: the operator asks it to
	// hand over to a follower on a node that reports (a Warning).
	EventLeaderUnserved = "LeaderUnserved"
	// EventSwitchoverRefused: a requested switchover was not executed.
	EventSwitchoverRefused = "SwitchoverRefused"
	// EventPromoteRefused: a forced promotion request was ignored (not
	// confirmed, or the leader is not lost).
	EventPromoteRefused = "PromoteRefused"
	// EventSyncQuorumLowered: with dataDurability Preferred, commits wait
	// for fewer followers than syncReplicas (or for none, only the commit
	// gate) because followers have been unready for longer than the lease
	// duration (a Warning).
	EventSyncQuorumLowered = "SyncQuorumLowered"
	// EventSyncQuorumRestored: commits wait for syncReplicas followers
	// again.
	EventSyncQuorumRestored = "SyncQuorumRestored"
	// EventObjectStoreInvalid: spec.backup.objectStore or
	// spec.bootstrap.recovery cannot be used (a Warning): a Secret or a
	// key is missing, or the store refused.
	EventObjectStoreInvalid = "ObjectStoreInvalid"
	// EventArchivingFailing: the leader's WAL uploads fail (a Warning);
	// EventArchivingResumed: they succeed again.
	EventArchivingFailing = "ArchivingFailing"
	EventArchivingResumed = "ArchivingResumed"
	// EventBackupStarted, EventBackupCompleted and EventBackupFailed (a
	// Warning) follow a Backup, on it and on its ReplicaSet.
	EventBackupStarted   = "BackupStarted"
	EventBackupCompleted = "BackupCompleted"
	EventBackupFailed    = "BackupFailed"
)

// DiskFillingPercent is how full a member's data volume may be before the
// cluster is Degraded (DiskFilling).
const DiskFillingPercent = 80
