package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/backup"
)

// Backups run in the ReplicaSet's pass, which already reads every agent
// (docs/backup.md): a Pending Backup gets a member (the most advanced
// ready follower, the leader when there is none) and an ID; the member's
// pod is annotated regent.dev/backup=<id>, which its agent sees on its own
// pod and starts; the pass follows the agent's /status until the backup
// ends, records it on the Backup and removes the annotation. One backup
// runs at a time per cluster.

// +kubebuilder:rbac:groups=regent.dev,resources=backups,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=regent.dev,resources=backups/status,verbs=get;update;patch

// backupPoll is how often a running backup is looked at; backupUnseen
// how long its member's agent may go without reporting it at all.
const (
	backupPoll   = 2 * time.Second
	backupUnseen = 10 * time.Minute
)

// reconcileBackups drives the cluster's Backups one step.
func (r *ReplicaSetReconciler) reconcileBackups(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, stores storeMounts) error {
	var list regentv1.BackupList
	if err := r.List(ctx, &list, client.InNamespace(rs.Namespace)); err != nil {
		return err
	}
	var mine []*regentv1.Backup
	for i := range list.Items {
		if list.Items[i].Spec.Cluster == rs.Name {
			mine = append(mine, &list.Items[i])
		}
	}
	obs.backups = mine
	next, err := r.reconcileSchedule(ctx, rs, obs, stores)
	if err != nil {
		return err
	}
	if !next.IsZero() {
		obs.nextBackup = &next
	}
	slices.SortFunc(mine, func(a, b *regentv1.Backup) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	for _, b := range mine {
		if b.Status.Phase == regentv1.BackupRunning {
			return r.followBackup(ctx, rs, obs, b)
		}
	}
	for _, b := range mine {
		if b.Status.Phase != "" && b.Status.Phase != regentv1.BackupPending {
			continue
		}
		if stores.archive == nil {
			why := "spec.backup.objectStore is not set"
			if obs.storeInvalid != "" {
				why = "spec.backup.objectStore cannot be used: " + obs.storeInvalid
			}
			return r.endBackup(ctx, rs, b, nil, why)
		}
		return r.startBackup(ctx, rs, obs, b, mine)
	}
	return nil
}

// startBackup picks b's member and asks its agent.
func (r *ReplicaSetReconciler) startBackup(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, b *regentv1.Backup, all []*regentv1.Backup) error {
	member := backupMember(obs)
	if member == nil {
		obs.requeue(5 * time.Second)
		return r.setBackupPhase(ctx, b, func(s *regentv1.BackupObjectStatus) { s.Phase = regentv1.BackupPending })
	}
	now := r.now()
	id := backup.NewID(now)
	for taken := true; taken; {
		taken = slices.ContainsFunc(all, func(o *regentv1.Backup) bool { return o.Status.ID == id })
		if taken {
			now = now.Add(time.Second)
			id = backup.NewID(now)
		}
	}
	started := metav1.NewTime(r.now())
	fromStandby := member.Name != obs.holder()
	if err := r.setBackupPhase(ctx, b, func(s *regentv1.BackupObjectStatus) {
		s.Phase, s.ID, s.Member, s.FromStandby, s.StartedAt, s.Error = regentv1.BackupRunning, id, member.Name, fromStandby, &started, ""
	}); err != nil {
		return err
	}
	if err := r.annotateBackup(ctx, member, id); err != nil {
		return err
	}
	r.Recorder.Eventf(b, rs, corev1.EventTypeNormal, regentv1.EventBackupStarted, "Backup",
		"Backup %s of %s started on %s", id, rs.Name, member.Name)
	obs.requeue(backupPoll)
	return nil
}

// backupMember is the member a backup runs on: the ready follower that
// replayed the most, so that the leader's disk and CPU are spared; the
// leader when no follower is ready.
func backupMember(obs *observation) *corev1.Pod {
	var best, leader *corev1.Pod
	var bestLSN uint64
	for i := range obs.pods {
		p := &obs.pods[i]
		st := obs.agents[p.Name]
		if st == nil || !st.Running || !podReady(p) {
			continue
		}
		if p.Name == obs.holder() {
			leader = p
			continue
		}
		if st.Mode == api.ModeFollower && (best == nil || uint64(st.ReplayedLSN) > bestLSN) {
			best, bestLSN = p, uint64(st.ReplayedLSN)
		}
	}
	if best != nil {
		return best
	}
	return leader
}

// followBackup reads the member's report of the running backup b.
func (r *ReplicaSetReconciler) followBackup(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, b *regentv1.Backup) error {
	var pod *corev1.Pod
	for i := range obs.pods {
		if obs.pods[i].Name == b.Status.Member {
			pod = &obs.pods[i]
		}
	}
	if pod == nil || !pod.DeletionTimestamp.IsZero() {
		return r.endBackup(ctx, rs, b, nil, fmt.Sprintf("its member %s is gone", b.Status.Member))
	}
	if pod.Annotations[names.AnnotationBackup] != b.Status.ID {
		// The annotation was lost (the pod was recreated): ask again.
		if err := r.annotateBackup(ctx, pod, b.Status.ID); err != nil {
			return err
		}
	}
	obs.requeue(backupPoll)
	st := obs.agents[pod.Name]
	if st == nil || st.Backup == nil || st.Backup.ID != b.Status.ID {
		if b.Status.StartedAt != nil && r.now().Sub(b.Status.StartedAt.Time) > backupUnseen {
			return r.endBackup(ctx, rs, b, nil, fmt.Sprintf("the agent of %s has not reported it in %s", pod.Name, backupUnseen))
		}
		return nil
	}
	progress := st.Backup
	switch progress.Phase {
	case api.BackupRunning:
		return r.setBackupPhase(ctx, b, func(s *regentv1.BackupObjectStatus) { s.Bytes = progress.Bytes })
	case api.BackupCompleted:
		if err := r.endBackup(ctx, rs, b, progress, ""); err != nil {
			return err
		}
	case api.BackupFailed:
		if err := r.endBackup(ctx, rs, b, progress, progress.Error); err != nil {
			return err
		}
	}
	return r.annotateBackup(ctx, pod, "")
}

// endBackup records b's outcome: completed with progress, or failed for
// why.
func (r *ReplicaSetReconciler) endBackup(ctx context.Context, rs *regentv1.ReplicaSet, b *regentv1.Backup, progress *api.BackupProgress, why string) error {
	ended := metav1.NewTime(r.now())
	err := r.setBackupPhase(ctx, b, func(s *regentv1.BackupObjectStatus) {
		s.CompletedAt = &ended
		if progress != nil {
			s.Bytes, s.StoredBytes, s.Timeline = progress.Bytes, progress.StoredBytes, progress.Timeline
			s.StartLSN, s.EndLSN = progress.StartLSN.Text(), progress.EndLSN.Text()
		}
		if why != "" {
			s.Phase, s.Error = regentv1.BackupFailed, why
			return
		}
		s.Phase = regentv1.BackupCompleted
	})
	if err != nil {
		return err
	}
	if why != "" {
		r.Recorder.Eventf(b, rs, corev1.EventTypeWarning, regentv1.EventBackupFailed, "Backup", "Backup %s of %s failed: %s", b.Name, rs.Name, why)
		r.Recorder.Eventf(rs, b, corev1.EventTypeWarning, regentv1.EventBackupFailed, "Backup", "Backup %s failed: %s", b.Name, why)
		return nil
	}
	r.Recorder.Eventf(b, rs, corev1.EventTypeNormal, regentv1.EventBackupCompleted, "Backup",
		"Backup %s of %s completed on %s: %d bytes, %d stored", b.Status.ID, rs.Name, b.Status.Member, progress.Bytes, progress.StoredBytes)
	r.Recorder.Eventf(rs, b, corev1.EventTypeNormal, regentv1.EventBackupCompleted, "Backup",
		"Backup %s completed on %s: %d bytes, %d stored", b.Status.ID, b.Status.Member, progress.Bytes, progress.StoredBytes)
	return nil
}

// setBackupPhase patches b's status with change.
func (r *ReplicaSetReconciler) setBackupPhase(ctx context.Context, b *regentv1.Backup, change func(*regentv1.BackupObjectStatus)) error {
	before := b.DeepCopy()
	change(&b.Status)
	if before.Status == b.Status {
		return nil
	}
	if err := r.Status().Patch(ctx, b, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("record Backup %s: %w", b.Name, err)
	}
	return nil
}

// annotateBackup sets (or, with "", removes) the pod's backup request.
func (r *ReplicaSetReconciler) annotateBackup(ctx context.Context, pod *corev1.Pod, id string) error {
	if pod.Annotations[names.AnnotationBackup] == id {
		return nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if id == "" {
		delete(pod.Annotations, names.AnnotationBackup)
	} else {
		pod.Annotations[names.AnnotationBackup] = id
	}
	if err := r.Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("ask %s for backup %s: %w", pod.Name, id, err)
	}
	return nil
}

// clusterOfBackup maps a Backup to its ReplicaSet's pass.
func clusterOfBackup(_ context.Context, o client.Object) []reconcile.Request {
	b, ok := o.(*regentv1.Backup)
	if !ok || strings.TrimSpace(b.Spec.Cluster) == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Cluster}}}
}
