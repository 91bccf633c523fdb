package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
)

// reconcileSwitchoverRequest checks a switchover a person asked for with
// the ReplicaSet's annotation and, when the target is fit, asks the
// leader's agent through the Lease to stop cleanly and release.
func (r *ReplicaSetReconciler) reconcileSwitchoverRequest(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	target := rs.Annotations[names.AnnotationSwitchoverTo]
	if target == "" || obs.protocol().SwitchoverTo == target {
		return nil
	}
	key := client.ObjectKeyFromObject(rs)
	if why := r.switchoverRefusal(rs, obs, target); why != "" {
		obs.switchoverRefused = fmt.Sprintf("switchover to %s refused: %s", target, why)
		r.warnOnce(rs, key, regentv1.EventSwitchoverRefused, "Switchover", obs.switchoverRefused, true)
		return nil
	}
	if err := r.updateLease(ctx, obs, func(s *leadership.State) { s.SwitchoverTo = target }); err != nil {
		return fmt.Errorf("ask the leader to hand over: %w", err)
	}
	ctrl.LoggerFrom(ctx).Info("Asked the leader to hand over", "leader", obs.holder(), "to", target)
	r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeNormal, regentv1.EventSwitchoverRequested, "Switchover",
		"Asked %s to stop cleanly and hand leadership of epoch %d to %s", obs.holder(), obs.epoch(), target)
	obs.requeue(500 * time.Millisecond)
	return nil
}

// reconcileUnservedLeader moves leadership off a leader whose pod the node
// controller marked not ready: its node stopped reporting, so no Service
// routes to it and writes stop, while its agent, still reaching the API
// server, renews the Lease and no failover starts. The agent reads the
// Lease, so the ordinary switchover works: it stops cleanly and releases
// with its final position, nothing acknowledged is lost, and a follower on
// a node that reports takes over. (A leader cut off from the API server as
// well stops renewing and is failed over as any lost leader.)
func (r *ReplicaSetReconciler) reconcileUnservedLeader(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	holder := obs.holder()
	if holder == "" || obs.protocol().SwitchoverTo != "" || rs.Annotations[names.AnnotationSwitchoverTo] != "" {
		return nil
	}
	i := slices.IndexFunc(obs.pods, func(p corev1.Pod) bool { return p.Name == holder })
	if i < 0 || !markedNotReadyFromOutside(&obs.pods[i]) {
		return nil
	}
	node := obs.pods[i].Spec.NodeName
	key := client.ObjectKeyFromObject(rs)
	target, why := r.switchoverTarget(rs, obs)
	if target == "" {
		obs.requeue(time.Second)
		r.warnOnce(rs, key, regentv1.EventLeaderUnserved, "Wait", fmt.Sprintf(
			"no Service routes to the leader %s: its node %s stopped reporting; no follower can take over: %s", holder, node, why), true)
		return nil
	}
	if err := r.updateLease(ctx, obs, func(s *leadership.State) { s.SwitchoverTo = target }); err != nil {
		return fmt.Errorf("switch over from a leader on a lost node: %w", err)
	}
	ctrl.LoggerFrom(ctx).Info("Switching over from a leader on a lost node", "leader", holder, "node", node, "to", target)
	r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeWarning, regentv1.EventLeaderUnserved, "Switchover",
		"No Service routes to the leader %s: its node %s stopped reporting; asked it to hand leadership of epoch %d to %s",
		holder, node, obs.epoch(), target)
	obs.requeue(500 * time.Millisecond)
	return nil
}

// switchoverTarget is the most advanced follower a switchover may go to
// now, or "" and why none may.
func (r *ReplicaSetReconciler) switchoverTarget(rs *regentv1.ReplicaSet, obs *observation) (target, why string) {
	holder := obs.holder()
	var best lsn.LSN
	why = "no follower reports a position"
	for i := range obs.pods {
		pod := &obs.pods[i]
		a := obs.agents[pod.Name]
		if pod.Name == holder || a == nil || a.ReceivedLSN == 0 {
			continue
		}
		if refused := r.switchoverRefusal(rs, obs, pod.Name); refused != "" {
			if target == "" {
				why = refused
			}
			continue
		}
		if target == "" || a.ReceivedLSN > best {
			target, best = pod.Name, a.ReceivedLSN
		}
	}
	if target != "" {
		why = ""
	}
	return target, why
}

// switchoverRefusal says why target cannot take over now ("" when it can).
func (r *ReplicaSetReconciler) switchoverRefusal(rs *regentv1.ReplicaSet, obs *observation, target string) string {
	if target == obs.holder() {
		return target + " already leads"
	}
	i := slices.IndexFunc(obs.pods, func(p corev1.Pod) bool { return p.Name == target })
	if i < 0 {
		return "no pod " + target + " in this cluster"
	}
	pod := &obs.pods[i]
	a := obs.agents[target]
	switch {
	case !podReady(pod):
		return target + " is not ready"
	case a == nil:
		return "the agent of " + target + " does not answer"
	case !a.Running || !a.InRecovery || !a.Streaming:
		return target + " is not streaming from the leader"
	}
	if a.ReceivedLSN == 0 {
		return target + " reports no position"
	}
	if lag := obs.leaderLSN.Sub(a.ReceivedLSN); lag > uint64(max(ptr.Deref(rs.Spec.Failover.MaxLagBytes, 1<<20), 0)) {
		return fmt.Sprintf("%s lags the leader by %d bytes, more than maxLagBytes", target, lag)
	}
	return ""
}
