package controllers

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	st.Selector = labels.SelectorFromSet(names.SelectorLabels(rs.Name)).String()
	if obs.lease != nil {
		st.Leader = obs.holder()
		st.Epoch = obs.epoch()
	}
	if obs.lease != nil || reconcileErr == nil {
		st.Members = members(rs.Name, obs)
		st.Replicas = int32(len(obs.pods)) //nolint:gosec // G115: a cluster has at most 9 pods
		st.ReadyReplicas = 0
		for _, m := range st.Members {
			if m.Ready {
				st.ReadyReplicas++
			}
		}
	}
	st.Ready = fmt.Sprintf("%d/%d", st.ReadyReplicas, rs.DesiredReplicas())
	st.MaxLagBytes = nil
	for _, m := range st.Members {
		if m.LagBytes != nil && (st.MaxLagBytes == nil || *m.LagBytes > *st.MaxLagBytes) {
			st.MaxLagBytes = ptr.To(*m.LagBytes)
		}
	}

	if c := obs.certificates; c != nil {
		st.Certificates = &regentv1.CertificatesStatus{CAExpiresAt: metav1.NewTime(c.ca.Cert.NotAfter)}
		if !c.expires.IsZero() {
			st.Certificates.ExpiresAt = ptr.To(metav1.NewTime(c.expires))
		}
	}

	f := facts(rs, obs, reconcileErr)
	for _, c := range []metav1.Condition{availableCondition(f), progressingCondition(f), degradedCondition(f), failingOverCondition(f)} {
		c.ObservedGeneration = rs.Generation
		meta.SetStatusCondition(&st.Conditions, c)
	}
	st.Phase = phase(f)
	r.archiveStatus(rs, obs)
	managedStatus(rs, obs)
	recordMetrics(rs, obs)
	r.warnDiskFilling(rs, f.filling)
	r.warnStartFailures(rs, obs)
	r.warnReclones(rs, obs)
	if reconcileErr == nil {
		st.ObservedGeneration = rs.Generation
	}
}

// statusFacts are what the conditions and the phase are computed from.
type statusFacts struct {
	desired, replicas, ready int32
	epoch                    int64
	// leader is the member labelled leader at the Lease's epoch (nil:
	// none); leaderReason its agent's own reason (": …" or "").
	leader       *regentv1.MemberStatus
	leaderReason string
	// creating: the Lease was never renewed, so no leader ever served.
	creating bool
	// foreign, or failedStep with reconcileErr: what could not be applied.
	foreign      error
	reconcileErr error
	failedStep   string
	// decision is the failover decision of the pass (nil: none made);
	// blocked says the epoch is sealed or released, so a waiting decision
	// keeps writes stopped.
	decision          *failover.Decision
	blocked           bool
	switchoverRefused string
	// filling says which members' volumes are DiskFillingPercent full.
	filling string
}

func (f statusFacts) available() bool { return f.leader != nil && f.leader.Ready }

func facts(rs *regentv1.ReplicaSet, obs *observation, reconcileErr error) statusFacts {
	f := statusFacts{desired: rs.DesiredReplicas(), replicas: rs.Status.Replicas, ready: rs.Status.ReadyReplicas,
		epoch: rs.Status.Epoch, leader: leaderMember(rs.Status.Members),
		creating:     obs.lease == nil || obs.lease.Spec.RenewTime == nil,
		reconcileErr: reconcileErr, failedStep: obs.failedStep, decision: obs.decision,
		blocked:           obs.lease != nil && (obs.protocol().Sealed() || obs.holder() == ""),
		switchoverRefused: obs.switchoverRefused}
	if obs.foreign != nil {
		f.foreign = obs.foreign
	}
	if f.leader != nil {
		f.leaderReason = agentReason(obs, f.leader.Name)
	}
	f.filling = fillingVolumes(rs.Status.Members)
	return f
}

// fillingVolumes says which members' data volumes are at least
// DiskFillingPercent full, with how full ("" when none is).
func fillingVolumes(members []regentv1.MemberStatus) string {
	var full []string
	for _, m := range members {
		if m.DiskUsedBytes == nil || m.DiskCapacityBytes == nil || *m.DiskCapacityBytes <= 0 {
			continue
		}
		if pct := *m.DiskUsedBytes * 100 / *m.DiskCapacityBytes; pct >= regentv1.DiskFillingPercent {
			full = append(full, fmt.Sprintf("%s %d%%", m.Name, pct))
		}
	}
	return strings.Join(full, ", ")
}

func condition(typ string, status bool, reason, message string) metav1.Condition {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: message}
}

// availableCondition: writes are served (a ready leader at the epoch).
func availableCondition(f statusFacts) metav1.Condition {
	switch {
	case f.available():
		return condition(regentv1.ConditionAvailable, true, regentv1.ReasonLeaderReady,
			fmt.Sprintf("%s serves writes at epoch %d", f.leader.Name, f.epoch))
	case f.leader != nil:
		return condition(regentv1.ConditionAvailable, false, regentv1.ReasonLeaderNotReady,
			fmt.Sprintf("%s leads epoch %d but is not ready%s", f.leader.Name, f.epoch, f.leaderReason))
	}
	return condition(regentv1.ConditionAvailable, false, regentv1.ReasonNoLeader,
		fmt.Sprintf("no pod is labelled leader at epoch %d", f.epoch))
}

// progressingCondition: the cluster is still reaching the spec.
func progressingCondition(f statusFacts) metav1.Condition {
	switch {
	case f.replicas != f.desired:
		return condition(regentv1.ConditionProgressing, true, regentv1.ReasonScaling,
			fmt.Sprintf("%d pods exist, %d wanted", f.replicas, f.desired))
	case f.ready < f.desired && f.creating:
		return condition(regentv1.ConditionProgressing, true, regentv1.ReasonCreating,
			fmt.Sprintf("%d of %d pods ready", f.ready, f.desired))
	case f.ready < f.desired:
		return condition(regentv1.ConditionProgressing, true, regentv1.ReasonReplicasNotReady,
			fmt.Sprintf("%d of %d pods ready", f.ready, f.desired))
	}
	return condition(regentv1.ConditionProgressing, false, regentv1.ReasonReconciled, "every pod is ready")
}

// degradedCondition: something a person may have to act on, the most
// pressing first: a refused switchover, a refused or blocked failover, a
// name taken, a failed step, then what is missing.
func degradedCondition(f statusFacts) metav1.Condition {
	d := f.decision
	switch {
	case f.switchoverRefused != "":
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonSwitchoverRefused, f.switchoverRefused)
	case d != nil && d.Kind == failover.Refuse:
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonFailoverRefused, d.Reason)
	case d != nil && d.Kind == failover.Wait && f.blocked:
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonFailoverBlocked, d.Reason)
	case f.foreign != nil:
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonNameTaken, f.foreign.Error())
	case errors.As(f.reconcileErr, new(*SpecError)):
		// The spec asks for what cannot be done: say what, here.
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonReconcileFailed,
			fmt.Sprintf("could not %s: %v", f.failedStep, f.reconcileErr))
	case f.reconcileErr != nil:
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonReconcileFailed,
			fmt.Sprintf("could not %s; the ReconcileFailed events and the operator's log say why", f.failedStep))
	case f.filling != "":
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonDiskFilling,
			fmt.Sprintf("data volumes at least %d%% full: %s; grow spec.storage.size before PostgreSQL stops on a full disk",
				regentv1.DiskFillingPercent, f.filling))
	case f.available() && f.ready < f.desired:
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonFollowersNotReady,
			fmt.Sprintf("%d of %d followers ready: fewer copies of the data than asked for",
				max(f.ready-1, 0), f.desired-1))
	case !f.available() && f.creating:
		return condition(regentv1.ConditionDegraded, false, regentv1.ReasonCreating, "the cluster is being created")
	case !f.available():
		return condition(regentv1.ConditionDegraded, true, regentv1.ReasonLeaderNotReady,
			"no ready leader: writes are not served"+f.leaderReason)
	}
	return condition(regentv1.ConditionDegraded, false, regentv1.ReasonAllReplicasReady, "nothing is missing")
}

// failingOverCondition reports the failover decision of the pass.
func failingOverCondition(f statusFacts) metav1.Condition {
	if d := f.decision; d != nil {
		switch d.Kind {
		case failover.Seal:
			return condition(regentv1.ConditionFailingOver, true, regentv1.ReasonSealing, d.Reason)
		case failover.Promote, failover.Wait:
			return condition(regentv1.ConditionFailingOver, true, regentv1.ReasonElecting, d.Reason)
		case failover.Refuse:
			return condition(regentv1.ConditionFailingOver, false, regentv1.ReasonFailoverRefused, d.Reason)
		}
	}
	return condition(regentv1.ConditionFailingOver, false, regentv1.ReasonIdle, "no leadership change in progress")
}

// phase is the one word of the printer column.
func phase(f statusFacts) regentv1.Phase {
	if d := f.decision; d != nil && (d.Kind == failover.Seal || d.Kind == failover.Promote || d.Kind == failover.Wait && f.blocked) {
		return regentv1.PhaseFailingOver
	}
	switch {
	case f.creating && !f.available():
		return regentv1.PhaseCreating
	case !f.available():
		return regentv1.PhaseUnavailable
	case f.ready < f.desired:
		return regentv1.PhaseDegraded
	}
	return regentv1.PhaseHealthy
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
			if a.DiskTotalBytes > 0 {
				m.DiskUsedBytes, m.DiskCapacityBytes = ptr.To(a.DiskUsedBytes), ptr.To(a.DiskTotalBytes)
			}
			if a.ReceivedLSN != 0 && obs.leaderLSN != 0 && pod.Name != obs.holder() {
				m.LagBytes = ptr.To(int64(obs.leaderLSN.Sub(a.ReceivedLSN))) //nolint:gosec // G115: WAL distances stay far below 2^63
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

// recordMetrics exports the epoch and the members' lag and disks. A series
// that no longer applies goes: a leader's lag (it has none), the series of
// a member the spec no longer has or that reports no more.
func recordMetrics(rs *regentv1.ReplicaSet, obs *observation) {
	epochGauge.WithLabelValues(rs.Namespace, rs.Name).Set(float64(obs.epoch()))
	// Every kind's counter exists from the start, at 0, so that increase()
	// sees a cluster's first failover.
	for _, kind := range []regentv1.FailoverKind{regentv1.FailoverKindFailover, regentv1.FailoverKindSwitchover, regentv1.FailoverKindForced} {
		failoversTotal.WithLabelValues(rs.Namespace, rs.Name, string(kind))
	}
	// The data-loss budget exists in Async mode; Sync mode loses nothing.
	if rs.Spec.Replication.Mode == regentv1.ReplicationSync {
		maxLagBytesGauge.DeleteLabelValues(rs.Namespace, rs.Name)
	} else {
		maxLagBytesGauge.WithLabelValues(rs.Namespace, rs.Name).Set(float64(ptr.Deref(rs.Spec.Failover.MaxLagBytes, 1<<20)))
	}
	var pods []string
	for _, m := range rs.Status.Members {
		pods = append(pods, m.Name)
		if m.LagBytes != nil {
			memberLagBytes.WithLabelValues(rs.Namespace, rs.Name, m.Name).Set(float64(*m.LagBytes))
		} else {
			memberLagBytes.DeleteLabelValues(rs.Namespace, rs.Name, m.Name)
		}
		if m.DiskCapacityBytes != nil && m.DiskUsedBytes != nil {
			memberDiskUsedBytes.WithLabelValues(rs.Namespace, rs.Name, m.Name).Set(float64(*m.DiskUsedBytes))
			memberDiskCapacityBytes.WithLabelValues(rs.Namespace, rs.Name, m.Name).Set(float64(*m.DiskCapacityBytes))
		}
	}
	// The spec's members keep their certificates' series while they do
	// not report (a pod starting).
	for i := range int(rs.DesiredReplicas()) {
		if pod := names.Pod(rs.Name, i); !slices.Contains(pods, pod) {
			pods = append(pods, pod)
		}
	}
	keepMemberSeries(types.NamespacedName{Namespace: rs.Namespace, Name: rs.Name}, pods)
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

// warnDiskFilling sends a Warning when members' volumes start filling (or
// others join them), once, not every pass.
func (r *ReplicaSetReconciler) warnDiskFilling(rs *regentv1.ReplicaSet, filling string) {
	key := client.ObjectKeyFromObject(rs)
	r.memory.mu.Lock()
	m := r.memory.get(key)
	changed := m.filling != filling
	m.filling = filling
	r.memory.mu.Unlock()
	if changed && filling != "" {
		r.Recorder.Eventf(rs, nil, corev1.EventTypeWarning, regentv1.EventDiskFilling, "DiskFilling",
			"Data volumes at least %d%% full: %s", regentv1.DiskFillingPercent, filling)
	}
}

// warnStartFailures sends a Warning, on the ReplicaSet and the pod, when a
// member's PostgreSQL fails to start for a reason not warned of before: the
// note carries PostgreSQL's words, so `kubectl get events` names the
// offending parameter.
func (r *ReplicaSetReconciler) warnStartFailures(rs *regentv1.ReplicaSet, obs *observation) {
	r.warnMembers(rs, obs, func(m *clusterMemory, pod string, a *api.Status) (string, bool) {
		if m.startFailures == nil {
			m.startFailures = map[string]string{}
		}
		warn := a.StartFailure != "" && a.StartFailure != m.startFailures[pod]
		m.startFailures[pod] = a.StartFailure
		return fmt.Sprintf("PostgreSQL does not start on %s: %s", pod, a.StartFailure), warn
	}, regentv1.EventStartFailed, "StartPostgreSQL")
}

// warnReclones sends a Warning, on the ReplicaSet and the pod, each time a
// member's agent reports it removed its data and cloned the leader again.
func (r *ReplicaSetReconciler) warnReclones(rs *regentv1.ReplicaSet, obs *observation) {
	r.warnMembers(rs, obs, func(m *clusterMemory, pod string, a *api.Status) (string, bool) {
		if m.reclones == nil {
			m.reclones = map[string]int64{}
		}
		warn := a.Reclones > m.reclones[pod]
		m.reclones[pod] = a.Reclones
		return fmt.Sprintf("%s's data was removed and the leader cloned again: %s", pod, a.LastReclone), warn
	}, regentv1.EventRecloned, "CloneAgain")
}

// warnMembers sends a Warning event, on the ReplicaSet and the pod, for
// each member whose agent's report note says is new, as the cluster's
// memory remembers what was already said (note runs under its lock).
func (r *ReplicaSetReconciler) warnMembers(rs *regentv1.ReplicaSet, obs *observation,
	note func(m *clusterMemory, pod string, a *api.Status) (string, bool), reason, action string) {
	type warning struct {
		pod  *corev1.Pod
		text string
	}
	var warnings []warning
	r.memory.mu.Lock()
	m := r.memory.get(client.ObjectKeyFromObject(rs))
	for i := range obs.pods {
		pod := &obs.pods[i]
		if a := obs.agents[pod.Name]; a != nil {
			if text, warn := note(m, pod.Name, a); warn {
				warnings = append(warnings, warning{pod, text})
			}
		}
	}
	r.memory.mu.Unlock()
	for _, w := range warnings {
		r.Recorder.Eventf(rs, w.pod, corev1.EventTypeWarning, reason, action, "%s", w.text)
	}
}
