package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// archiveStatus computes status.archive and the Archiving condition from
// the leader's report of its WAL shipping and the cluster's Backups
// (docs/backup.md). Without spec.backup.objectStore both are absent.
func (r *ReplicaSetReconciler) archiveStatus(rs *regentv1.ReplicaSet, obs *observation) {
	st := &rs.Status
	if rs.Spec.Backup.ObjectStore == nil {
		st.Archive = nil
		meta.RemoveStatusCondition(&st.Conditions, regentv1.ConditionArchiving)
		return
	}
	a := &regentv1.ArchiveStatus{}
	if st.Archive != nil {
		// What the leader last reported stays while it does not answer.
		a.LastArchivedWAL, a.LastArchivedTime = st.Archive.LastArchivedWAL, st.Archive.LastArchivedTime
	}
	cond := metav1.Condition{Type: regentv1.ConditionArchiving, Status: metav1.ConditionUnknown, Reason: regentv1.ReasonArchivingUnknown,
		Message: "the leader's agent has not reported its WAL shipping", ObservedGeneration: rs.Generation}
	leader := obs.agents[obs.holder()]
	switch {
	case obs.storeInvalid != "":
		cond.Status, cond.Reason = metav1.ConditionFalse, regentv1.ReasonObjectStoreInvalid
		cond.Message = "spec.backup.objectStore: " + obs.storeInvalid + "; the pods run without archiving"
	case leader == nil || leader.WALShipping == nil || !leader.WALShipping.Leading:
	default:
		ship := leader.WALShipping
		a.PendingWAL = int32(min(ship.Pending, 1<<30)) //nolint:gosec // G115: bounded just above
		if ship.LastShipped != "" {
			a.LastArchivedWAL = ship.LastShipped
			if ship.LastShippedAt != nil {
				a.LastArchivedTime = &metav1.Time{Time: *ship.LastShippedAt}
			}
		}
		if ship.Error != "" {
			since := "now"
			if ship.FailingSince != nil {
				since = ship.FailingSince.UTC().Format(time.RFC3339)
			}
			cond.Status, cond.Reason = metav1.ConditionFalse, regentv1.ReasonArchivingFailing
			cond.Message = fmt.Sprintf("uploads from %s fail since %s (%d files waiting, %d bytes): %s",
				obs.holder(), since, ship.Pending, ship.PendingBytes, ship.Error)
		} else {
			cond.Status, cond.Reason = metav1.ConditionTrue, regentv1.ReasonArchiving
			cond.Message = fmt.Sprintf("%s ships its WAL; %d files waiting", obs.holder(), ship.Pending)
		}
	}
	// The store's backups are the truth; before the first read of it,
	// the completed Backups stand in.
	if ms := obs.storeManifests; ms != nil {
		a.Backups = int32(len(ms)) //nolint:gosec // G115: a count of backups
		last := ms[len(ms)-1]
		a.LastBackup, a.LastBackupTime = last.ID, &metav1.Time{Time: last.EndTime}
		a.FirstRecoverabilityPoint = firstRecoverable(ms)
	} else {
		for _, b := range obs.backups {
			if b.Status.Phase != regentv1.BackupCompleted || b.Status.CompletedAt == nil {
				continue
			}
			a.Backups++
			if a.LastBackupTime == nil || b.Status.CompletedAt.After(a.LastBackupTime.Time) {
				a.LastBackup, a.LastBackupTime = b.Status.ID, b.Status.CompletedAt
			}
			if a.FirstRecoverabilityPoint == nil || b.Status.CompletedAt.Before(a.FirstRecoverabilityPoint) {
				a.FirstRecoverabilityPoint = b.Status.CompletedAt
			}
		}
	}
	if obs.nextBackup != nil {
		a.NextScheduledBackup = &metav1.Time{Time: *obs.nextBackup}
	}
	st.Archive = a
	r.warnArchiving(rs, cond)
	meta.SetStatusCondition(&st.Conditions, cond)
}

// warnArchiving records an event when archiving starts failing or
// resumes, not at every pass.
func (r *ReplicaSetReconciler) warnArchiving(rs *regentv1.ReplicaSet, cond metav1.Condition) {
	before := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionArchiving)
	switch {
	case cond.Reason == regentv1.ReasonArchivingFailing && (before == nil || before.Reason != cond.Reason):
		r.Recorder.Eventf(rs, nil, corev1.EventTypeWarning, regentv1.EventArchivingFailing, "Archive", "WAL archiving fails: %s", cond.Message)
	case cond.Reason == regentv1.ReasonArchiving && before != nil && before.Reason == regentv1.ReasonArchivingFailing:
		r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, regentv1.EventArchivingResumed, "Archive", "WAL archiving works again: %s", cond.Message)
	}
}
