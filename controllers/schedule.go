package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/backup"
)

// LabelScheduled marks the Backups the schedule made.
const LabelScheduled = "regent.dev/scheduled"

// parseSchedule reads spec.backup.schedule: five cron fields, UTC.
func parseSchedule(s string) (cron.Schedule, error) {
	sched, err := cron.ParseStandard(s)
	if err != nil {
		return nil, fmt.Errorf("spec.backup.schedule %q is not a five-field cron schedule (minute hour day month weekday): %w", s, err)
	}
	return sched, nil
}

// reconcileSchedule creates the Backup the schedule says is due, one at a
// time: after an outage of the operator, one backup, not one per missed
// slot. It returns when the next is due (zero without a schedule).
func (r *ReplicaSetReconciler) reconcileSchedule(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, stores storeMounts) (time.Time, error) {
	spec := rs.Spec.Backup.Schedule
	if spec == "" || stores.archive == nil {
		return time.Time{}, nil
	}
	sched, err := parseSchedule(spec)
	if err != nil {
		r.warnOnce(rs, client.ObjectKeyFromObject(rs), regentv1.EventBackupFailed, "Schedule", err.Error(), true)
		return time.Time{}, nil
	}
	last := rs.CreationTimestamp.Time
	for _, b := range obs.backups {
		if b.Labels[LabelScheduled] == "true" && b.CreationTimestamp.After(last) {
			last = b.CreationTimestamp.Time
		}
	}
	now := r.now()
	due, next := dueBackup(sched, last, now)
	if !due {
		obs.requeue(next.Sub(now))
		return next, nil
	}
	name := rs.Name + "-" + strings.ToLower(backup.NewID(now))
	b := &regentv1.Backup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rs.Namespace,
			Labels: map[string]string{names.LabelCluster: rs.Name, LabelScheduled: "true"}},
		Spec: regentv1.BackupSpec{Cluster: rs.Name},
	}
	b.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, regentv1.GroupVersion.WithKind("ReplicaSet"))}
	if err := r.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
		return time.Time{}, fmt.Errorf("create the scheduled Backup %s: %w", name, err)
	}
	r.Recorder.Eventf(rs, b, corev1.EventTypeNormal, regentv1.EventBackupStarted, "Schedule", "Scheduled Backup %s created (%s)", name, spec)
	obs.requeue(next.Sub(now))
	return next, nil
}

// dueBackup says whether a scheduled backup is due at now, the last one
// made at last (or the cluster created then), and when the next one is:
// slots missed while the operator was away make one backup, not many.
func dueBackup(sched cron.Schedule, last, now time.Time) (bool, time.Time) {
	next := sched.Next(last.UTC())
	if now.Before(next) {
		return false, next
	}
	return true, sched.Next(now.UTC())
}
