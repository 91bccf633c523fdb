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
