package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// sealWait is how long after sealing the operator waits for every
// follower's report before electing among those that reported.
const sealWait = 5 * time.Second

// healthyPeriod is how often a healthy cluster's agents are read, for the
// members' positions in status and metrics.
const healthyPeriod = 10 * time.Second

// reconcileFailover is the failover of docs/failover.md: it reads the
// agents, decides with failover.Decide, and carries out one step.
func (r *ReplicaSetReconciler) reconcileFailover(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	lease := obs.lease
	if lease == nil || lease.Spec.LeaseTransitions == nil {
		return nil
	}
	log := ctrl.LoggerFrom(ctx)
	start := time.Now()
	now := r.now()
	obs.agents = r.readAgents(ctx, client.ObjectKeyFromObject(rs), obs.pods, obs.certificates.roots)
	// Every answer arrived before this: a time an agent reports as an age
	// is placed no earlier than it was.
	answered := r.now()
	in := r.failoverInput(rs, obs, now, answered)
	d := failover.Decide(in)
	obs.decision = &d
	obs.leaderLSN = in.LeaderLSN
	decisionSeconds.Observe(time.Since(start).Seconds())
	epoch := obs.epoch()
	key := client.ObjectKeyFromObject(rs)

	if rs.Annotations[names.AnnotationPromote] != "" {
		switch {
		case !forcedPromotionAsked(rs):
			r.warnOnce(rs, key, regentv1.EventPromoteRefused, "Promote", fmt.Sprintf(
				"%s=%s is ignored without %s=true: a forced promotion may lose acknowledged writes, and says so",
				names.AnnotationPromote, rs.Annotations[names.AnnotationPromote], names.AnnotationAcceptDataLoss), true)
		case d.Kind == failover.None:
			r.warnOnce(rs, key, regentv1.EventPromoteRefused, "Promote", fmt.Sprintf(
				"%s=%s is refused and removed: the leader %s is not lost (use %s for a planned handover)",
				names.AnnotationPromote, rs.Annotations[names.AnnotationPromote], obs.holder(), names.AnnotationSwitchoverTo), true)
			// Left in place, the acceptance of data loss would force the
			// next election, maybe months later, without anyone asking.
			if err := r.clearForcedPromotion(ctx, rs); err != nil {
				return err
			}
		}
	}

	switch d.Kind {
	case failover.None:
		obs.requeue(healthyPeriod)
		if !d.Until.IsZero() {
			obs.requeue(d.Until.Sub(now))
		}
		if err := r.reconcileFailsafeSwitch(ctx, rs, obs); err != nil {
			return err
		}
		if err := r.reconcileSyncStandbys(ctx, rs, obs); err != nil {
			return err
		}
		if err := r.reconcileSwitchoverRequest(ctx, rs, obs); err != nil {
			return err
		}
		return r.reconcileUnservedLeader(ctx, rs, obs)
	case failover.Wait:
		r.warnOnce(rs, key, regentv1.EventFailoverWaiting, "Wait", d.Reason, false)
		// Followers report their seals on /status, not through the API
		// server: no event brings the operator back, so it polls, briefly
		// while an election is pending.
		if p := obs.protocol(); p.Sealed() || p.Ending() {
			obs.requeue(100 * time.Millisecond)
		} else {
			obs.requeue(2 * time.Second)
		}
		if !d.Until.IsZero() {
			obs.requeue(d.Until.Sub(now))
		}
		return nil
	case failover.Refuse:
		r.warnOnce(rs, key, regentv1.EventFailoverRefused, "Refuse", d.Reason, true)
		obs.requeue(healthyPeriod)
		return nil
	case failover.Revoke:
		// Against the exact version judged: a renewal in between fails
		// this, and the next pass looks again.
		if err := r.updateLease(ctx, obs, func(s *leadership.State) { s.RevokedEpoch = epoch }); err != nil {
			return fmt.Errorf("revoke epoch %d: %w", epoch, err)
		}
		log.Info("Revoked the epoch of a lost leader", "epoch", epoch, "cause", d.Cause)
		r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeNormal, regentv1.EventFailoverStarted, "Revoke",
			"Leader %s of epoch %d lost (%s): epoch revoked, sealing it once no follower's confirmation of its failsafe is left",
			obs.holder(), epoch, d.Cause)
		obs.requeue(100 * time.Millisecond)
		return nil
	case failover.Seal:
		// Against the exact version judged: a renewal in between fails
		// this, and the next pass looks again.
		if err := r.updateLease(ctx, obs, func(s *leadership.State) {
			s.SealedEpoch, s.SealedAt = epoch, now
		}); err != nil {
			return fmt.Errorf("seal epoch %d: %w", epoch, err)
		}
		r.memory.mu.Lock()
		mem := r.memory.get(key)
		mem.sealSeenEpoch, mem.sealSeen = epoch, now
		r.memory.mu.Unlock()
		l := obs.lease
		log.Info("Sealed the epoch of a lost leader", "epoch", epoch, "cause", d.Cause)
		r.Recorder.Eventf(rs, l, corev1.EventTypeNormal, regentv1.EventFailoverStarted, "Seal",
			"Leader %s of epoch %d lost (%s): epoch sealed, waiting for the followers' positions", obs.holder(), epoch, d.Cause)
		obs.requeue(500 * time.Millisecond)
		return nil
	case failover.Promote:
		return r.promote(ctx, rs, obs, d, in, now)
	}
	return nil
}

// failoverInput gathers the decision's input and updates the memory.
func (r *ReplicaSetReconciler) failoverInput(rs *regentv1.ReplicaSet, obs *observation, now, answered time.Time) failover.Input {
	lease := obs.lease
	epoch := obs.epoch()
	holder := obs.holder()
	r.memory.mu.Lock()
	defer r.memory.mu.Unlock()
	mem := r.memory.get(client.ObjectKeyFromObject(rs))

	mem.noteRenewal(lease, now)

	var members []failover.Member
	holderTerminated := false
	for i := range obs.pods {
		pod := &obs.pods[i]
		ord, _ := names.Ordinal(rs.Name, pod.Name)
		m := failover.Member{Name: pod.Name, Ordinal: ord, Deleting: !pod.DeletionTimestamp.IsZero(),
			Ready: podReady(pod), ContainersTerminated: containersTerminated(pod), Agent: obs.agents[pod.Name]}
		if a := m.Agent; a != nil && a.SinceAPIContact != nil {
			// now was taken before the agents were asked: the contact
			// is placed no later than it was.
			m.APIContact = now.Add(-a.SinceAPIContact.Duration)
		}
		if pod.Name == holder && m.ContainersTerminated {
			holderTerminated = true
		}
		m.FailsafeClear = mem.noteFailsafeClear(pod.Name, epoch, m, now, answered)
		if a := m.Agent; a != nil && pod.Name == holder && a.Mode == api.ModeLeader && a.Epoch == epoch && a.WriteLSN != 0 {
			if mem.leaderEpoch != epoch || a.WriteLSN > mem.leaderLSN {
				mem.leaderEpoch, mem.leaderLSN = epoch, a.WriteLSN
			}
		}
		members = append(members, m)
	}
	// Who led this epoch, also once the Lease was released: the pod
	// labelled leader at it (the label stays until the promotion's first
	// step), else what the operator last saw on the Lease.
	former := holder
	if former == "" {
		for i := range obs.pods {
			if p := &obs.pods[i]; p.Labels[names.LabelRole] == names.RoleLeader && p.Labels[names.LabelEpoch] == strconv.FormatInt(epoch, 10) {
				former = p.Name
			}
		}
	}
	if former == "" && mem.holderEpoch == epoch {
		former = mem.holder
	}
	proto := obs.protocol()
	if former == "" {
		former = proto.ReleasedBy
	}
	if holder != "" {
		mem.holder, mem.holderEpoch = holder, epoch
	}
	obs.unstandingSince = mem.noteStanding(rs, obs, now)
	if (holder == "" || holderTerminated) && mem.lostEpoch != epoch {
		mem.lostEpoch, mem.lostSince = epoch, now
	}

	l := failover.Lease{Holder: holder, FormerHolder: former, Epoch: epoch, LastRenewSeen: mem.renewSeen,
		// A Lease of a later epoch counts as live from its promotion: a
		// winner that never comes up is replaced like any lost leader.
		EverRenewed: lease.Spec.RenewTime != nil || epoch > 1,
		Sealed:      proto.Sealed(), SealedAt: proto.SealedAt, ReleasedLSN: proto.ReleasedLSN,
		Revoked: proto.Ending() && !proto.Sealed(), FailsafeReplicas: proto.FailsafeReplicas}
	if l.Sealed {
		// The followers' wait runs from when this operator sealed, or
		// first saw the seal (another operator's, or one made by hand):
		// sealed-at is another machine's clock, never compared with this
		// one's.
		if mem.sealSeenEpoch != epoch {
			mem.sealSeenEpoch, mem.sealSeen = epoch, now
		}
		l.SealedAt = mem.sealSeen
	}
	in := failover.Input{
		Spec:    failoverSpec(rs, lease),
		Lease:   l,
		Members: members,
		Now:     now,
	}
	if mem.lostEpoch == epoch {
		in.LostSince = mem.lostSince
	}
	// The leader's position: what its agent reported, or wrote with its
	// last renewal (which an operator restarted since also reads).
	in.LeaderLSN = proto.LeaderLSN()
	if mem.leaderEpoch == epoch {
		in.LeaderLSN = max(in.LeaderLSN, mem.leaderLSN)
	}
	// A switchover under way: the leader was asked through the Lease.
	in.SwitchoverTo = proto.SwitchoverTo
	in.SystemIdentifier = proto.SystemIdentifier
	if forcedPromotionAsked(rs) {
		in.ForcePromote = rs.Annotations[names.AnnotationPromote]
	}
	// The acknowledgement rules the leader ran with in this epoch.
	if proto.Standbys.Kind == leadership.Quorum {
		in.Quorums = append(in.Quorums, proto.Standbys)
	}
	in.Quorums = append(in.Quorums, proto.Previous...)
	return in
}

func failoverSpec(rs *regentv1.ReplicaSet, lease *coordinationv1.Lease) failover.Spec {
	f := rs.Spec.Failover
	// The leader's agent fences at 2/3 of the duration written on the
	// Lease (at its creation or the last promotion), not of the spec's: a
	// lease shortened in the spec must not make the operator expire a
	// leader that may still write. The longer of the two is safe.
	leaseSeconds := rs.LeaseDurationSeconds()
	if lease != nil && lease.Spec.LeaseDurationSeconds != nil {
		leaseSeconds = max(leaseSeconds, *lease.Spec.LeaseDurationSeconds)
	}
	return failover.Spec{
		Enabled:       ptr.Deref(f.Enabled, true),
		Sync:          rs.Spec.Replication.Mode == regentv1.ReplicationSync,
		SyncReplicas:  int(ptr.Deref(rs.Spec.Replication.SyncReplicas, 1)),
		Followers:     int(rs.DesiredReplicas()) - 1,
		MaxLagBytes:   ptr.Deref(f.MaxLagBytes, 1<<20),
		Delay:         time.Duration(ptr.Deref(f.DelaySeconds, 0)) * time.Second,
		LeaseDuration: time.Duration(leaseSeconds) * time.Second,
		SealWait:      sealWait,
	}
}

// containersTerminated: the node reports both the postgres and the agent
// container terminated (or waiting to restart after terminating), or the
// whole pod finished: nothing in it can acknowledge a commit.
func containersTerminated(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return true
	}
	down := map[string]bool{}
	for _, c := range pod.Status.ContainerStatuses {
		down[c.Name] = c.State.Terminated != nil || (c.State.Waiting != nil && c.LastTerminationState.Terminated != nil)
	}
	return down[names.ContainerPostgres] && down[names.ContainerAgent]
}

// promote carries out the promotion steps of docs/failover.md, each
// idempotent: (1) the old leader's label goes, (2) the Lease moves to the
// winner at epoch+1; (3) reconcileLeadership labels the winner in this
// pass and (4) the next pass points the leader Service at the new epoch.
func (r *ReplicaSetReconciler) promote(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation,
	d failover.Decision, in failover.Input, now time.Time) error {
	log := ctrl.LoggerFrom(ctx)
	oldHolder, epoch := in.Lease.FormerHolder, obs.epoch()
	// The holder of a released Lease is gone from it: any leader label
	// left is the old one's.
	for i := range obs.pods {
		pod := &obs.pods[i]
		if pod.Name != d.Target && pod.Labels[names.LabelRole] == names.RoleLeader {
			if err := r.patchRoleLabels(ctx, rs, pod, roleLabels{}, epoch); err != nil {
				return err
			}
		}
	}
	l := obs.lease.DeepCopy()
	next := int32(epoch + 1) //nolint:gosec // G115: epochs come from an int32 field (leaseTransitions)
	acquired := metav1.NewMicroTime(now)
	l.Spec.AcquireTime, l.Spec.RenewTime = &acquired, nil
	l.Spec.LeaseDurationSeconds = ptr.To(rs.LeaseDurationSeconds())
	// The new epoch starts clean: no release, seal time, handover or
	// previous standbys of the old one (the seal itself stays, below it).
	// What belongs to the cluster stays: its database's identifier and
	// its first epoch.
	proto := obs.protocol()
	switchover := proto.SwitchoverTo == d.Target
	standbys, _ := syncStandbys(rs, obs, d.Target, now)
	leadership.Encode(leadership.State{Holder: d.Target, Epoch: int64(next), SealedEpoch: proto.SealedEpoch,
		RevokedEpoch: proto.RevokedEpoch, Failsafe: rs.FailsafeEnabled(), Standbys: standbys,
		SystemIdentifier: proto.SystemIdentifier, FirstEpoch: proto.FirstEpoch}, l)
	if err := r.Update(ctx, l); err != nil {
		return fmt.Errorf("move the Lease to %s: %w", d.Target, err)
	}
	obs.lease = l
	// (3) Label the winner now: the Lease this pass just wrote is the
	// API server's answer, and the winner's agent waits for the label.
	for i := range obs.pods {
		if pod := &obs.pods[i]; pod.Name == d.Target {
			if err := r.patchRoleLabels(ctx, rs, pod, roleLabels{role: names.RoleLeader, epoch: strconv.Itoa(int(next))}, int64(next)); err != nil {
				return err
			}
		}
	}
	// (4) Point the leader Service at the new epoch (the pass applies
	// every Service again right after; this one cannot wait).
	for _, svc := range renderServices(rs, int64(next)) {
		if *svc.Name == names.LeaderService(rs.Name) {
			if err := r.Apply(ctx, svc, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
				return fmt.Errorf("point %s at epoch %d: %w", *svc.Name, next, err)
			}
		}
	}

	kind := regentv1.FailoverKindFailover
	switch {
	case d.Forced:
		kind = regentv1.FailoverKindForced
	case switchover:
		kind = regentv1.FailoverKindSwitchover
	}
	record := &regentv1.FailoverRecord{Kind: kind, From: oldHolder, To: d.Target, Epoch: int64(next), Reason: d.Cause,
		EndTime: ptr.To(metav1.NewTime(now))}
	if !in.Lease.SealedAt.IsZero() {
		record.StartTime = ptr.To(metav1.NewTime(in.Lease.SealedAt))
	} else if !in.LostSince.IsZero() {
		record.StartTime = ptr.To(metav1.NewTime(in.LostSince))
	}
	if old := max(in.LeaderLSN, in.Lease.ReleasedLSN); old != 0 {
		record.OldLeaderLSN = old.Text()
		record.EstimatedLostBytes = ptr.To(int64(old.Sub(d.TargetLSN))) //nolint:gosec // G115: WAL distances stay far below 2^63
	}
	record.NewLeaderLSN = d.TargetLSN.Text()
	// The record is not derived from anything a later pass sees: write it
	// now, on its own (the pass's status patch may lose an optimistic-lock
	// race and be recomputed).
	withRecord := rs.DeepCopy()
	withRecord.Status.LastFailover = record
	if err := r.Status().Patch(ctx, withRecord, client.MergeFrom(rs)); err != nil {
		log.Error(err, "Could not record the failover in status.lastFailover")
	}
	rs.Status.LastFailover = record
	failoversTotal.WithLabelValues(rs.Namespace, rs.Name, string(kind)).Inc()
	log.Info("Promoted a new leader", "from", oldHolder, "to", d.Target, "epoch", next, "reason", d.Reason)
	eventType := corev1.EventTypeNormal
	if d.Forced {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(rs, l, eventType, regentv1.EventLeaderPromoted, "Promote",
		"%s: %s leads epoch %d (was %s): %s", kind, d.Target, next, oldHolder, d.Reason)
	if d.Forced {
		// The request is spent: it must not force a later election.
		if err := r.clearForcedPromotion(ctx, rs); err != nil {
			return err
		}
	}
	if switchover && rs.Annotations[names.AnnotationSwitchoverTo] != "" {
		// On a copy: the patch's answer must not replace the status this
		// pass computes.
		done := rs.DeepCopy()
		patch := client.MergeFrom(rs.DeepCopy())
		delete(done.Annotations, names.AnnotationSwitchoverTo)
		if err := r.Patch(ctx, done, patch); err != nil {
			return fmt.Errorf("clear the switchover request: %w", err)
		}
	}
	obs.requeue(100 * time.Millisecond)
	return nil
}

// reconcileSyncStandbys keeps the synchronous standbys on the Lease, which
// the leader's agent applies, in step with the spec and, with
// dataDurability Preferred, with the followers standing (see
// failover.SyncStandbys).
func (r *ReplicaSetReconciler) reconcileSyncStandbys(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	holder := obs.holder()
	if holder == "" {
		return nil
	}
	proto := obs.protocol()
	cur := proto.Standbys
	want, recheck := syncStandbys(rs, obs, holder, r.now())
	if recheck > 0 {
		obs.requeue(recheck)
	}
	if cur.Equal(want) {
		if len(proto.Previous) == 0 {
			return nil
		}
		if cur.Kind != leadership.Quorum && rs.Spec.Replication.Mode == regentv1.ReplicationSync {
			// A Preferred leader left with no follower: no standby can
			// come to hold what the previous quorums acknowledged, so
			// the election keeps honouring them.
			return nil
		}
		obs.requeue(time.Second)
		return r.settleSyncStandbys(ctx, obs, holder)
	}
	err := r.updateLease(ctx, obs, func(s *leadership.State) {
		// The leader is to be seen running want before anything settles.
		s.Standbys, s.PreviousUntil = want, 0
		if cur.Kind != leadership.Quorum {
			return
		}
		// Commits acknowledged under cur may be on standbys want does
		// not name, or on fewer of them than want's quorum reaches: the
		// election honours cur (and any earlier value not settled yet)
		// until they are on every standby want names.
		previous := []leadership.Standbys{cur}
		for _, p := range s.Previous {
			if !slices.ContainsFunc(previous, p.Equal) {
				previous = append(previous, p)
			}
		}
		s.Previous = previous
	})
	if err != nil {
		return fmt.Errorf("set the synchronous standbys: %w", err)
	}
	ctrl.LoggerFrom(ctx).Info("Set the synchronous standbys", "value", want.String(), "previous", cur.String())
	if rs.Spec.Replication.DataDurability == regentv1.DataDurabilityPreferred {
		k := int(ptr.Deref(rs.Spec.Replication.SyncReplicas, 1))
		switch {
		case failover.Lowered(want, k, int(rs.DesiredReplicas())):
			r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeWarning, regentv1.EventSyncQuorumLowered, "SetSynchronousStandbys",
				"dataDurability Preferred: followers unready for more than %ds; commits now wait for %s instead of ANY %d",
				rs.LeaseDurationSeconds(), want, k)
		case cur.Kind != leadership.NoStandbys && failover.Lowered(cur, k, int(rs.DesiredReplicas())):
			r.Recorder.Eventf(rs, obs.lease, corev1.EventTypeNormal, regentv1.EventSyncQuorumRestored, "SetSynchronousStandbys",
				"commits wait for %s again", want)
		}
	}
	return nil
}

// settleSyncStandbys forgets the previous synchronous standbys once they
// no longer matter: the leader runs the current ones (from then on, commits
// are acknowledged under them), and every standby the current ones name has
// received the WAL the leader had written by then (so each holds every
// commit acknowledged under the previous ones).
func (r *ReplicaSetReconciler) settleSyncStandbys(ctx context.Context, obs *observation, holder string) error {
	proto := obs.protocol()
	leader := obs.agents[holder]
	if proto.PreviousUntil == 0 {
		if leader == nil || leader.SynchronousStandbyNames != proto.Standbys.String() || leader.WriteLSN == 0 {
			return nil
		}
		return r.updateLease(ctx, obs, func(s *leadership.State) { s.PreviousUntil = leader.WriteLSN })
	}
	for _, m := range proto.Standbys.Names() {
		if a := obs.agents[m]; a == nil || a.ReceivedLSN < proto.PreviousUntil {
			return nil
		}
	}
	ctrl.LoggerFrom(ctx).Info("The previous synchronous standbys no longer matter", "previous", proto.Previous,
		"current", proto.Standbys.String(), "settledAt", proto.PreviousUntil.String())
	return r.updateLease(ctx, obs, func(s *leadership.State) { s.Previous, s.PreviousUntil = nil, 0 })
}

// syncStandbys is failover.SyncStandbys for leader, from what this pass
// observed and the operator's memory of who stood when.
func syncStandbys(rs *regentv1.ReplicaSet, obs *observation, leader string,
	now time.Time) (leadership.Standbys, time.Duration) {
	in := failover.StandbysInput{
		Sync:            rs.Spec.Replication.Mode == regentv1.ReplicationSync,
		SyncReplicas:    int(ptr.Deref(rs.Spec.Replication.SyncReplicas, 1)),
		Preferred:       rs.Spec.Replication.DataDurability == regentv1.DataDurabilityPreferred,
		Grace:           time.Duration(rs.LeaseDurationSeconds()) * time.Second,
		MaxLagBytes:     ptr.Deref(rs.Spec.Failover.MaxLagBytes, 1<<20),
		Leader:          leader,
		Standing:        map[string]bool{},
		UnstandingSince: obs.unstandingSince,
		Positions:       map[string]lsn.LSN{},
		Now:             now,
	}
	if obs.lease != nil {
		in.Current = obs.protocol().Standbys
	}
	if l := obs.agents[leader]; l != nil {
		in.LeaderLSN = l.WriteLSN
	}
	for i := range int(rs.DesiredReplicas()) {
		pod := names.Pod(rs.Name, i)
		in.Pods = append(in.Pods, pod)
		in.Standing[pod] = followerStands(obs, pod)
		if a := obs.agents[pod]; a != nil {
			in.Positions[pod] = max(a.ReceivedLSN, a.ReplayedLSN)
		}
	}
	return failover.SyncStandbys(in)
}

// followerStands says whether a follower can confirm commits now: its
// agent reports it streaming in this epoch, or its pod is ready.
func followerStands(obs *observation, pod string) bool {
	if a := obs.agents[pod]; a != nil && a.Mode == api.ModeFollower && a.Streaming && a.Epoch == obs.epoch() {
		return true
	}
	i := slices.IndexFunc(obs.pods, func(p corev1.Pod) bool { return p.Name == pod })
	return i >= 0 && podReady(&obs.pods[i])
}

// updateLease changes the protocol's state on the Lease this pass
// observed, with optimistic concurrency against that version, and keeps
// the result as the pass's Lease.
func (r *ReplicaSetReconciler) updateLease(ctx context.Context, obs *observation, change func(*leadership.State)) error {
	l := obs.lease.DeepCopy()
	s := obs.protocol()
	change(&s)
	leadership.Encode(s, l)
	if err := r.Update(ctx, l); err != nil {
		return err
	}
	obs.lease = l
	return nil
}

// warnOnce records a Warning (or Normal) event when its text changes.
func (r *ReplicaSetReconciler) warnOnce(rs *regentv1.ReplicaSet, key types.NamespacedName, reason, action, msg string, warning bool) {
	r.memory.mu.Lock()
	mem := r.memory.get(key)
	same := mem.lastWarning == msg
	mem.lastWarning = msg
	r.memory.mu.Unlock()
	if same {
		return
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(rs, nil, typ, reason, action, "%s", msg)
}

// clearForcedPromotion removes a forced promotion request, on a copy: the
// patch's answer must not replace the status this pass computes.
func (r *ReplicaSetReconciler) clearForcedPromotion(ctx context.Context, rs *regentv1.ReplicaSet) error {
	done := rs.DeepCopy()
	patch := client.MergeFrom(rs.DeepCopy())
	delete(done.Annotations, names.AnnotationPromote)
	delete(done.Annotations, names.AnnotationAcceptDataLoss)
	if err := r.Patch(ctx, done, patch); err != nil {
		return fmt.Errorf("clear the forced promotion request: %w", err)
	}
	return nil
}

// forcedPromotionAsked: a person named a pod to promote and accepted the
// loss of acknowledged writes, both (names.AnnotationPromote).
func forcedPromotionAsked(rs *regentv1.ReplicaSet) bool {
	return rs.Annotations[names.AnnotationPromote] != "" && rs.Annotations[names.AnnotationAcceptDataLoss] == "true"
}

// reconcileFailsafeSwitch writes spec.failover.failsafe onto the Lease,
// where the leader reads it (against the version observed: a renewal in
// between makes the next pass try again).
func (r *ReplicaSetReconciler) reconcileFailsafeSwitch(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	want := rs.FailsafeEnabled()
	if obs.protocol().Failsafe == want {
		return nil
	}
	if err := r.updateLease(ctx, obs, func(s *leadership.State) { s.Failsafe = want }); err != nil {
		return fmt.Errorf("set the failsafe on the Lease: %w", err)
	}
	ctrl.LoggerFrom(ctx).Info("Set the failsafe on the Lease", "failsafe", want)
	return nil
}
