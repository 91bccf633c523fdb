package controllers

import (
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// computeStatus derives the whole status from what this pass observed. It
// writes no volatile text (no raw errors, no clocks), so that a pass that
// changed nothing patches nothing. observedGeneration moves only after a
// pass that applied everything.
func (r *ReplicaSetReconciler) computeStatus(rs *regentv1.ReplicaSet, obs *observation, reconcileErr error) {
	st := &rs.Status
	desired := rs.DesiredReplicas()

	st.Selector = labels.SelectorFromSet(names.SelectorLabels(rs.Name)).String()
	if obs.lease != nil {
		st.Leader = obs.holder()
		st.Epoch = obs.epoch()
	}
	if obs.lease != nil || reconcileErr == nil {
		st.Members = members(rs.Name, obs)
		st.Replicas = int32(len(obs.pods))
		st.ReadyReplicas = 0
		for _, m := range st.Members {
			if m.Ready {
				st.ReadyReplicas++
			}
		}
	}
	st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, desired)
	st.MaxLagBytes = nil
	for _, m := range st.Members {
		if m.LagBytes != nil && (st.MaxLagBytes == nil || *m.LagBytes > *st.MaxLagBytes) {
			st.MaxLagBytes = ptr.To(*m.LagBytes)
		}
	}

	leader := leaderMember(st.Members)
	available := leader != nil && leader.Ready
	// A cluster whose Lease was never renewed never had a serving leader.
	creating := obs.lease == nil || obs.lease.Spec.RenewTime == nil

	switch {
	case available:
		setCondition(rs, regentv1.ConditionAvailable, true, regentv1.ReasonLeaderReady,
			fmt.Sprintf("%s serves writes at epoch %d", leader.Name, st.Epoch))
	case leader != nil:
		setCondition(rs, regentv1.ConditionAvailable, false, regentv1.ReasonLeaderNotReady,
			fmt.Sprintf("%s leads epoch %d but is not ready%s", leader.Name, st.Epoch, agentReason(obs, leader.Name)))
	default:
		setCondition(rs, regentv1.ConditionAvailable, false, regentv1.ReasonNoLeader,
			fmt.Sprintf("no pod is labelled leader at epoch %d", st.Epoch))
	}

	switch {
	case st.Replicas != desired:
		setCondition(rs, regentv1.ConditionProgressing, true, regentv1.ReasonScaling,
			fmt.Sprintf("%d pods exist, %d wanted", st.Replicas, desired))
	case st.ReadyReplicas < desired && creating:
		setCondition(rs, regentv1.ConditionProgressing, true, regentv1.ReasonCreating,
			fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, desired))
	case st.ReadyReplicas < desired:
		setCondition(rs, regentv1.ConditionProgressing, true, regentv1.ReasonReplicasNotReady,
			fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, desired))
	default:
		setCondition(rs, regentv1.ConditionProgressing, false, regentv1.ReasonReconciled,
			"every pod is ready")
	}

	switch {
	case obs.foreign != nil:
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonNameTaken, obs.foreign.Error())
	case reconcileErr != nil:
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonReconcileFailed,
			fmt.Sprintf("could not %s; the ReconcileFailed events and the operator's log say why", obs.failedStep))
	case available && st.ReadyReplicas < desired:
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonFollowersNotReady,
			fmt.Sprintf("%d of %d followers ready: fewer copies of the data than asked for",
				max(st.ReadyReplicas-1, 0), desired-1))
	case !available && creating:
		setCondition(rs, regentv1.ConditionDegraded, false, regentv1.ReasonCreating,
			"the cluster is being created")
	case !available:
		why := ""
		if leader != nil {
			why = agentReason(obs, leader.Name)
		}
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonLeaderNotReady,
			"no ready leader: writes are not served"+why)
	default:
		setCondition(rs, regentv1.ConditionDegraded, false, regentv1.ReasonAllReplicasReady,
			"nothing is missing")
	}
	failoverConditions(rs, obs)

	switch {
	case creating && !available:
		st.Phase = regentv1.PhaseCreating
	case !available:
		st.Phase = regentv1.PhaseUnavailable
	case st.ReadyReplicas < desired:
		st.Phase = regentv1.PhaseDegraded
	default:
		st.Phase = regentv1.PhaseHealthy
	}

	if d := obs.decision; d != nil && (d.Kind == failover.Seal || d.Kind == failover.Promote ||
		(d.Kind == failover.Wait && obs.lease != nil && (obs.protocol().Sealed() || obs.holder() == ""))) {
		st.Phase = regentv1.PhaseFailingOver
	}

	if reconcileErr == nil {
		st.ObservedGeneration = rs.Generation
	}
}

func setCondition(rs *regentv1.ReplicaSet, typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&rs.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             s,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: rs.Generation,
	})
}

// members lists the pods of the cluster by ordinal, with their roles read
// from their labels. A leader label counts only on the Lease holder at the
// Lease's epoch: anything else is a stale claim.
func members(cluster string, obs *observation) []regentv1.MemberStatus {
	pods := slices.Clone(obs.pods)
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		i, _ := names.Ordinal(cluster, a.Name)
		j, _ := names.Ordinal(cluster, b.Name)
		return i - j
	})
	epoch := strconv.FormatInt(obs.epoch(), 10)
	out := make([]regentv1.MemberStatus, 0, len(pods))
	for i := range pods {
		pod := &pods[i]
		m := regentv1.MemberStatus{Name: pod.Name, Ready: podReady(pod), Role: regentv1.RoleUnknown}
		switch pod.Labels[names.LabelRole] {
		case names.RoleLeader:
			if pod.Name == obs.holder() && pod.Labels[names.LabelEpoch] == epoch {
				m.Role = regentv1.RoleLeader
			}
		case names.RoleFollower:
			m.Role = regentv1.RoleFollower
		}
		if a := obs.agents[pod.Name]; a != nil {
			m.Timeline = ptrIfNonZero(a.Timeline)
			m.ReceivedLSN, m.ReplayedLSN = a.ReceivedLSN.Text(), a.ReplayedLSN.Text()
			if a.Mode == api.ModeLeader && a.WriteLSN != 0 {
				m.ReceivedLSN = a.WriteLSN.Text()
			}
			if a.ReceivedLSN != 0 && obs.leaderLSN != 0 && pod.Name != obs.holder() {
				m.LagBytes = ptr.To(int64(obs.leaderLSN.Sub(a.ReceivedLSN)))
			}
		}
		if obs.decision != nil && pod.Name != obs.holder() {
			if why, ok := obs.decision.Eligibility[pod.Name]; ok {
				m.Eligible, m.Reason = ptr.To(why == ""), why
			} else {
				m.Eligible, m.Reason = standingEligibility(obs.agents[pod.Name])
			}
		}
		out = append(out, m)
	}
	return out
}

// standingEligibility says whether a follower could be promoted if the
// leader were lost now, and why not.
func standingEligibility(a *api.Status) (*bool, string) {
	switch {
	case a == nil:
		return ptr.To(false), "its agent does not answer"
	case !a.Running || !a.InRecovery:
		return ptr.To(false), "PostgreSQL is not running as a follower"
	case !a.Streaming:
		return ptr.To(false), "not streaming from the leader"
	}
	return ptr.To(true), ""
}

func ptrIfNonZero(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

// failoverConditions reports the failover decision of the pass.
func failoverConditions(rs *regentv1.ReplicaSet, obs *observation) {
	d := obs.decision
	if d == nil {
		setCondition(rs, regentv1.ConditionFailingOver, false, regentv1.ReasonIdle, "no leadership change in progress")
		return
	}
	switch d.Kind {
	case failover.Seal:
		setCondition(rs, regentv1.ConditionFailingOver, true, regentv1.ReasonSealing, d.Reason)
	case failover.Promote:
		setCondition(rs, regentv1.ConditionFailingOver, true, regentv1.ReasonElecting, d.Reason)
	case failover.Wait:
		setCondition(rs, regentv1.ConditionFailingOver, true, regentv1.ReasonElecting, d.Reason)
		if obs.lease != nil && obs.protocol().Sealed() || obs.holder() == "" {
			setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonFailoverBlocked, d.Reason)
		}
	case failover.Refuse:
		setCondition(rs, regentv1.ConditionFailingOver, false, regentv1.ReasonFailoverRefused, d.Reason)
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonFailoverRefused, d.Reason)
	default:
		setCondition(rs, regentv1.ConditionFailingOver, false, regentv1.ReasonIdle, "no leadership change in progress")
	}
	if obs.switchoverRefused != "" {
		setCondition(rs, regentv1.ConditionDegraded, true, regentv1.ReasonSwitchoverRefused, obs.switchoverRefused)
	}
	epochGauge.WithLabelValues(rs.Namespace, rs.Name).Set(float64(obs.epoch()))
	for _, m := range rs.Status.Members {
		if m.LagBytes != nil {
			memberLagBytes.WithLabelValues(rs.Namespace, rs.Name, m.Name).Set(float64(*m.LagBytes))
		}
	}
}

func leaderMember(members []regentv1.MemberStatus) *regentv1.MemberStatus {
	for i := range members {
		if members[i].Role == regentv1.RoleLeader {
			return &members[i]
		}
	}
	return nil
}

// agentReason is ": <why>" when pod's agent reported why it is not where it
// should be (a start that failed with PostgreSQL's own reason, a password
// the data does not know…), so that the condition says what to fix.
func agentReason(obs *observation, pod string) string {
	if a := obs.agents[pod]; a != nil && a.Reason != "" {
		return ": " + a.Reason
	}
	return ""
}
