package controllers

import (
	"context"
	"fmt"
	"strconv"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
)

// reconcileLeadership keeps the pods' role labels in step with the Lease.
// It never moves the Lease: the failover logic (reconcileFailover) runs
// before it in the same pass and carries out any promotion; this only
// labels what the Lease says.
func (r *ReplicaSetReconciler) reconcileLeadership(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	for i := range obs.pods {
		pod := &obs.pods[i]
		want, ok := desiredRoleLabels(pod, obs.lease)
		if !ok {
			continue
		}
		if want.role == names.RoleLeader {
			// Naming a leader must never rest on a stale cache: confirm
			// the holder, epoch and seal with the API server itself.
			fresh := &coordinationv1.Lease{}
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obs.lease), fresh); err != nil {
				return fmt.Errorf("confirm the Lease: %w", err)
			}
			if want, ok = desiredRoleLabels(pod, fresh); !ok || want.role != names.RoleLeader {
				continue
			}
		}
		if err := r.patchRoleLabels(ctx, rs, pod, want, obs.epoch()); err != nil {
			return err
		}
	}
	return nil
}

// roleLabels are the values of a pod's role and epoch labels; "" means the
// label is absent.
type roleLabels struct {
	role, epoch string
}

// desiredRoleLabels says what role labels pod should carry given the Lease,
// and false when they should stay as they are. Rules:
//   - the Lease holder is labelled leader at the Lease's epoch, unless that
//     epoch is sealed (a sealed epoch never serves again: docs/protocol.md),
//     when it loses the label;
//   - any other pod labelled leader, or a leader label of another epoch,
//     loses its role: it must not receive writes through <rs>-leader;
//   - a ready pod that is not the holder and has no role is a confirmed
//     follower (its agent is ready only while it streams from the leader).
func desiredRoleLabels(pod *corev1.Pod, lease *coordinationv1.Lease) (roleLabels, bool) {
	have := roleLabels{role: pod.Labels[names.LabelRole], epoch: pod.Labels[names.LabelEpoch]}
	if lease == nil || lease.Spec.HolderIdentity == nil || lease.Spec.LeaseTransitions == nil {
		return have, false
	}
	epoch := strconv.Itoa(int(*lease.Spec.LeaseTransitions))
	if pod.Name == *lease.Spec.HolderIdentity {
		if leadership.Of(lease).Sealed() {
			// Out of <rs>-leader at once, not at the next leader's
			// promotion: a frozen or cut-off leader holds every
			// connection a client opens to it meanwhile.
			if have.role == names.RoleLeader {
				return roleLabels{}, true
			}
			return have, false
		}
		want := roleLabels{role: names.RoleLeader, epoch: epoch}
		return want, want != have
	}
	switch {
	case have.role == names.RoleLeader || have.epoch != "":
		return roleLabels{}, true
	case have.role == "" && podReady(pod):
		return roleLabels{role: names.RoleFollower}, true
	}
	return have, false
}

func (r *ReplicaSetReconciler) patchRoleLabels(ctx context.Context, rs *regentv1.ReplicaSet,
	pod *corev1.Pod, want roleLabels, epoch int64) error {
	patch := client.MergeFrom(pod.DeepCopy())
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	setOrDelete(pod.Labels, names.LabelRole, want.role)
	setOrDelete(pod.Labels, names.LabelEpoch, want.epoch)
	if err := client.IgnoreNotFound(r.Patch(ctx, pod, patch)); err != nil {
		return fmt.Errorf("label pod %s: %w", pod.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Labelled pod", "pod", pod.Name, "role", want.role, "epoch", want.epoch)
	if want.role == names.RoleLeader {
		r.Recorder.Eventf(rs, pod, corev1.EventTypeNormal, regentv1.EventLeaderLabelled, "LabelLeader",
			"Labelled %s leader of epoch %d", pod.Name, epoch)
	}
	return nil
}

func setOrDelete(m map[string]string, k, v string) {
	if v == "" {
		delete(m, k)
		return
	}
	m[k] = v
}

func podReady(pod *corev1.Pod) bool { return podCondition(pod, corev1.PodReady) }

func podCondition(pod *corev1.Pod, typ corev1.PodConditionType) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == typ {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// markedNotReadyFromOutside: the pod is not ready although its containers
// are. A kubelet never posts that (with no readiness gates, Ready is
// ContainersReady); the node controller does, when the pod's node stops
// reporting: it sets Ready=False and nothing else.
func markedNotReadyFromOutside(pod *corev1.Pod) bool {
	return len(pod.Spec.ReadinessGates) == 0 && pod.DeletionTimestamp.IsZero() &&
		!podReady(pod) && podCondition(pod, corev1.ContainersReady)
}
