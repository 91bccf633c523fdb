package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
)

// EventRollingUpdate reasons: the operator restarts a pod for a new pod
// template.
const eventRollingUpdate = "RollingUpdate"

// reconcileRollout rolls a new pod template out (the StatefulSet's update
// strategy is OnDelete, so nothing restarts behind the operator's back):
// followers first, one at a time, each only once every pod is ready and
// every follower streams; then one switchover away from the leader, to the
// most advanced up-to-date follower; then the old leader, now a follower.
// It acts only while the cluster is healthy and no leadership change is
// under way, except for a pod that cannot run under its old template,
// which is restarted at once.
func (r *ReplicaSetReconciler) reconcileRollout(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	sts := &appsv1.StatefulSet{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: names.StatefulSet(rs.Name)}, sts); err != nil {
		return client.IgnoreNotFound(err)
	}
	revision := sts.Status.UpdateRevision
	if revision == "" || sts.Status.ObservedGeneration != sts.Generation {
		return nil
	}
	var outdated []*corev1.Pod
	for i := range obs.pods {
		if obs.pods[i].Labels[appsv1.ControllerRevisionHashLabelKey] != revision {
			outdated = append(outdated, &obs.pods[i])
		}
	}
	if len(outdated) == 0 {
		return nil
	}
	obs.requeue(2 * time.Second)
	if pod, why := cannotRun(outdated, obs); pod != nil {
		return r.restartStuck(ctx, rs, obs, pod, why, revision)
	}
	holder := obs.holder()
	if obs.decision == nil || obs.decision.Kind != failover.None || holder == "" ||
		obs.protocol().SwitchoverTo != "" || rs.Annotations[names.AnnotationSwitchoverTo] != "" {
		return nil
	}
	if int32(len(obs.pods)) != rs.DesiredReplicas() { //nolint:gosec // G115: a cluster has at most 9 pods
		return nil
	}
	for i := range obs.pods {
		pod := &obs.pods[i]
		if !pod.DeletionTimestamp.IsZero() || !podReady(pod) {
			return nil // one restart at a time: wait for the last one
		}
		if a := obs.agents[pod.Name]; pod.Name != holder && (a == nil || !a.Streaming) {
			return nil
		}
	}
	log := logf.FromContext(ctx)
	if why, err := r.volumeGrowing(ctx, rs, obs.pods); err != nil || why != "" {
		if why != "" {
			log.Info("Rolling update waits", "reason", why)
		}
		return err
	}
	// Followers first, highest ordinal first.
	slices.SortFunc(outdated, func(a, b *corev1.Pod) int {
		i, _ := names.Ordinal(rs.Name, a.Name)
		j, _ := names.Ordinal(rs.Name, b.Name)
		return j - i
	})
	for _, pod := range outdated {
		if pod.Name == holder {
			continue
		}
		log.Info("Restarting a follower for the new pod template", "pod", pod.Name, "revision", revision)
		r.Recorder.Eventf(rs, pod, corev1.EventTypeNormal, eventRollingUpdate, "Restart",
			"Restarting follower %s for pod template revision %s", pod.Name, revision)
		return client.IgnoreNotFound(r.Delete(ctx, pod, client.Preconditions{UID: ptr.To(pod.UID)}))
	}
	// Only the leader is left: hand over to the most advanced follower.
	target, why := r.switchoverTarget(rs, obs)
	if target == "" {
		log.Info("Rolling update waits to switch over", "reason", why)
		return nil
	}
	if err := r.updateLease(ctx, obs, func(s *leadership.State) { s.SwitchoverTo = target }); err != nil {
		return fmt.Errorf("switch over for the rolling update: %w", err)
	}
	log.Info("Switching over for the rolling update", "from", holder, "to", target)
	r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeNormal, eventRollingUpdate, "Switchover",
		"Every follower runs revision %s: asked %s to hand leadership of epoch %d to %s before it restarts",
		revision, holder, obs.epoch(), target)
	return nil
}

// cannotRun finds an outdated pod that cannot run under its template: its
// PostgreSQL does not start, or one of its containers crash-loops. Such a
// pod has no health to keep and, as a leader, nothing to hand over: the
// new template (a fixed parameter, say) is its only way out.
func cannotRun(outdated []*corev1.Pod, obs *observation) (*corev1.Pod, string) {
	for _, pod := range outdated {
		if !pod.DeletionTimestamp.IsZero() || podReady(pod) {
			continue
		}
		if a := obs.agents[pod.Name]; a != nil && a.StartFailure != "" {
			return pod, "PostgreSQL does not start: " + a.StartFailure
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
				return pod, "container " + cs.Name + " crash-loops"
			}
		}
	}
	return nil, ""
}

// restartStuck restarts a pod that cannot run onto the new template, at
// once, but one at a time.
func (r *ReplicaSetReconciler) restartStuck(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation,
	pod *corev1.Pod, why, revision string) error {
	for i := range obs.pods {
		if !obs.pods[i].DeletionTimestamp.IsZero() {
			return nil
		}
	}
	logf.FromContext(ctx).Info("Restarting a pod that cannot run for the new pod template", "pod", pod.Name,
		"revision", revision, "reason", why)
	r.Recorder.Eventf(rs, pod, corev1.EventTypeNormal, eventRollingUpdate, "Restart",
		"Restarting %s at once for pod template revision %s: %s", pod.Name, revision, why)
	return client.IgnoreNotFound(r.Delete(ctx, pod, client.Preconditions{UID: ptr.To(pod.UID)}))
}

// volumeGrowing says which member's data volume is still being grown by
// its storage driver: a volume that grows only offline (its claim says
// FileSystemResizePending) grows when its pod next starts, so a restart
// before the driver got that far would leave it at its old size until the
// restart after.
func (r *ReplicaSetReconciler) volumeGrowing(ctx context.Context, rs *regentv1.ReplicaSet, pods []corev1.Pod) (string, error) {
	for i := range pods {
		pvc := &corev1.PersistentVolumeClaim{}
		key := client.ObjectKey{Namespace: rs.Namespace, Name: names.VolumeData + "-" + pods[i].Name}
		if err := r.Get(ctx, key, pvc); err != nil {
			return "", client.IgnoreNotFound(err)
		}
		want, have := pvc.Spec.Resources.Requests[corev1.ResourceStorage], pvc.Status.Capacity[corev1.ResourceStorage]
		if have.IsZero() || want.Cmp(have) <= 0 {
			continue
		}
		pending := slices.ContainsFunc(pvc.Status.Conditions, func(c corev1.PersistentVolumeClaimCondition) bool {
			return c.Type == corev1.PersistentVolumeClaimFileSystemResizePending && c.Status == corev1.ConditionTrue
		})
		if !pending {
			return fmt.Sprintf("the data volume of %s is growing from %s to %s", pods[i].Name, have.String(), want.String()), nil
		}
	}
	return "", nil
}
