package controllers

import (
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
)

// liveCluster creates a 3-pod cluster whose pods are ready and served by
// hollow agents reporting the given positions, and waits until db-0 leads
// epoch 1 and has renewed its Lease.
func liveCluster(t *testing.T, mutate func(*regentv1.ReplicaSet), lsns ...uint64) (string, []*hollowAgent) {
	t.Helper()
	return liveClusterIn(t, newNamespace(t), mutate, lsns...)
}

// liveClusterIn is liveCluster in namespace ns, made beforehand.
func liveClusterIn(t *testing.T, ns string, mutate func(*regentv1.ReplicaSet), lsns ...uint64) (string, []*hollowAgent) {
	t.Helper()
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Failover.LeaseDurationSeconds = ptr.To[int32](3)
		if mutate != nil {
			mutate(rs)
		}
	}))
	waitReconciled(t, rs)
	g := NewWithT(t)
	var agents []*hollowAgent
	for i, lsn := range lsns {
		pod := names.Pod("db", i)
		NewWithT(t).Eventually(func(g Gomega) { get(t, g, ns, pod, &corev1.Pod{}) }).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		setPodReady(t, g, ns, pod, true)
		agents = append(agents, startHollowAgent(t, ns, pod, lsn))
	}
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(lease.Spec.RenewTime).NotTo(BeNil(), "db-0 has not renewed yet")
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Phase).To(Equal(regentv1.PhaseHealthy), "%+v", got.Status.Conditions)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	return ns, agents
}

// expectLeader waits until pod leads epoch 2: Lease, labels, the leader
// Service's selector and the ReplicaSet's status all say so.
func expectLeader(t *testing.T, ns, pod string) {
	t.Helper()
	const epoch = 2
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal(pod))
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(epoch))
		labels := get(t, g, ns, pod, &corev1.Pod{}).Labels
		g.Expect(labels).To(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
		g.Expect(labels).To(HaveKeyWithValue(names.LabelEpoch, strconv.Itoa(epoch)))
		svc := get(t, g, ns, "db-leader", &corev1.Service{})
		g.Expect(svc.Spec.Selector).To(HaveKeyWithValue(names.LabelEpoch, labels[names.LabelEpoch]))
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Leader).To(Equal(pod))
		g.Expect(got.Status.Epoch).To(BeEquivalentTo(epoch))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	// One leader only.
	pods := &corev1.PodList{}
	NewWithT(t).Expect(k8s.List(t.Context(), pods, client.InNamespace(ns))).To(Succeed())
	for _, p := range pods.Items {
		if p.Name != pod {
			NewWithT(t).Expect(p.Labels[names.LabelRole]).NotTo(Equal(names.RoleLeader), "%s still labelled leader", p.Name)
		}
	}
}

func hasEvent(t *testing.T, g Gomega, ns, reason, text string) {
	t.Helper()
	list := &eventsv1.EventList{}
	g.Expect(k8s.List(t.Context(), list, client.InNamespace(ns))).To(Succeed())
	for _, e := range list.Items {
		if e.Reason == reason && strings.Contains(e.Note, text) {
			return
		}
	}
	g.Expect(false).To(BeTrue(), "no %s event saying %q", reason, text)
}

func TestFailoverPromotesTheFollowerWithTheMostWAL(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000200, 0x3000000, 0x3000100)
	start := time.Now()
	// The leader's PostgreSQL dies: its agent releases the Lease.
	agents[0].set(func(a *hollowAgent) { a.crashed = true })
	expectLeader(t, ns, "db-2")
	t.Logf("release → db-2 labelled leader of epoch 2: %s", time.Since(start).Round(time.Millisecond))

	g := NewWithT(t)
	got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	g.Expect(got.Status.LastFailover).NotTo(BeNil())
	g.Expect(*got.Status.LastFailover).To(MatchFields(IgnoreExtras, Fields{
		"Kind": Equal(regentv1.FailoverKindFailover), "From": Equal("db-0"), "To": Equal("db-2"),
		"Epoch": BeEquivalentTo(2), "OldLeaderLSN": Equal("0/3000200"), "NewLeaderLSN": Equal("0/3000100"),
		"EstimatedLostBytes": Equal(ptr.To[int64](0x100)),
	}))
	g.Expect(got.Status.LastFailover.Reason).To(ContainSubstring("released the Lease"))
	NewWithT(t).Eventually(func(g Gomega) {
		hasEvent(t, g, ns, regentv1.EventFailoverStarted, "epoch sealed")
		hasEvent(t, g, ns, regentv1.EventLeaderPromoted, "db-2 leads epoch 2")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestSilentLeaderIsReplacedOnlyAfterItsLeaseExpires(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	frozen := time.Now()
	agents[0].set(func(a *hollowAgent) { a.frozen = true })
	// Lease of 3 s: nothing moves before it expires by the operator's clock.
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("db-0"))
		g.Expect(leadership.Of(lease).SealedEpoch).To(BeZero())
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())
	// Equal positions: the lowest ordinal wins.
	expectLeader(t, ns, "db-1")
	NewWithT(t).Expect(time.Since(frozen)).To(BeNumerically(">=", 3*time.Second))
	// The old leader comes back: it does not lead again.
	agents[0].set(func(a *hollowAgent) { a.frozen = false })
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(get(t, g, ns, "db-0", &corev1.Pod{}).Labels).NotTo(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
		g.Expect(ptr.Deref(get(t, g, ns, "db-leader", &coordinationv1.Lease{}).Spec.HolderIdentity, "")).To(Equal("db-1"))
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())
}

// In Sync mode (ANY 1 of 2) a commit may be acknowledged by db-2 alone;
// while db-2 is silent the operator must not elect db-1, even long after
// the seal; once db-2 reports, it wins.
// liveSyncCluster is liveCluster in Sync mode with ANY 1 of the two
// followers, once the operator has put that on the Lease.
func liveSyncCluster(t *testing.T, lsns ...uint64) (string, []*hollowAgent) {
	t.Helper()
	ns, agents := liveCluster(t, func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = regentv1.ReplicationSync
		rs.Spec.Replication.SyncReplicas = ptr.To[int32](1)
	}, lsns...)
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_1", "db_2")`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	return ns, agents
}

func TestSyncModeWaitsForTheFollowerThatMayHoldTheOnlyCopy(t *testing.T) {
	ns, agents := blockedSyncElection(t)
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1))
		g.Expect(get(t, g, ns, "db-1", &corev1.Pod{}).Labels).NotTo(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
	}).WithTimeout(3 * time.Second).WithPolling(poll).Should(Succeed())

	agents[2].set(func(a *hollowAgent) { a.frozen = false })
	expectLeader(t, ns, "db-2")
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_0", "db_1")`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// The escape hatch of a blocked Sync election: a person names db-1 and,
// only with accept-data-loss=true, it is promoted; the receipt says it was
// forced and the request is cleared.
func TestAForcedPromotionEndsABlockedElection(t *testing.T) {
	ns, _ := blockedSyncElection(t)

	rs := get(t, NewWithT(t), ns, "db", &regentv1.ReplicaSet{})
	NewWithT(t).Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Annotations = map[string]string{names.AnnotationPromote: "db-1"}
	})).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		hasEvent(t, g, ns, regentv1.EventPromoteRefused, "ignored without regent.dev/accept-data-loss=true")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1))
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())

	NewWithT(t).Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Annotations[names.AnnotationAcceptDataLoss] = "true"
	})).To(Succeed())
	expectLeader(t, ns, "db-1")
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Annotations).NotTo(HaveKey(names.AnnotationPromote), "the request is cleared once done")
		g.Expect(got.Annotations).NotTo(HaveKey(names.AnnotationAcceptDataLoss))
		g.Expect(got.Status.LastFailover).NotTo(BeNil())
		g.Expect(got.Status.LastFailover.Kind).To(Equal(regentv1.FailoverKindForced))
		hasEvent(t, g, ns, regentv1.EventLeaderPromoted, "forced by a person")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A forced promotion asked while the leader is not lost is refused and
// removed: left in place, its acceptance of data loss would force the next
// election, whenever that comes.
func TestAForcedPromotionOfAHealthyClusterIsRefusedAndRemoved(t *testing.T) {
	ns, _ := liveSyncCluster(t, 0x3000100, 0x3000100, 0x3000100)
	rs := get(t, NewWithT(t), ns, "db", &regentv1.ReplicaSet{})
	NewWithT(t).Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Annotations = map[string]string{names.AnnotationPromote: "db-1", names.AnnotationAcceptDataLoss: "true"}
	})).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		hasEvent(t, g, ns, regentv1.EventPromoteRefused, "is refused and removed: the leader db-0 is not lost")
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Annotations).NotTo(HaveKey(names.AnnotationPromote))
		g.Expect(got.Annotations).NotTo(HaveKey(names.AnnotationAcceptDataLoss))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	lease := get(t, NewWithT(t), ns, "db-leader", &coordinationv1.Lease{})
	NewWithT(t).Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("db-0"))
	NewWithT(t).Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1))
}

// blockedSyncElection is a Sync ANY 1 cluster whose leader and db-2 froze
// (a zone lost, say): db-2 may hold the only copy of a commit, so the
// election waits, Degraded=FailoverBlocked.
func blockedSyncElection(t *testing.T) (string, []*hollowAgent) {
	t.Helper()
	ns, agents := liveSyncCluster(t, 0x3000100, 0x3000000, 0x3000100)
	agents[2].set(func(a *hollowAgent) { a.frozen = true })
	agents[0].set(func(a *hollowAgent) { a.frozen = true })
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonFailoverBlocked)
		g.Expect(conditionMessage(got, regentv1.ConditionDegraded)).To(ContainSubstring("1 of the 2 followers of ANY 1 (db-1, db-2) reported sealed positions, 2 needed"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	return ns, agents
}

// Scaling a Sync cluster down from 3 to 2 drops db-2 from the synchronous
// standbys, but commits acknowledged by db-2 alone before the leader ran
// the new setting may be on no other follower yet: until db-1 has received
// the leader's position of that moment, the election still needs db-2's
// report, and a failover waits rather than elect db-1.
func TestSyncScaleDownHonoursThePreviousStandbysUntilSettled(t *testing.T) {
	ns, agents := liveSyncCluster(t, 0x3000100, 0x3000000, 0x3000100)

	NewWithT(t).Expect(update(t, &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}},
		func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](2) })).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_1")`))
		g.Expect(leadership.Of(lease).Previous).To(Equal([]leadership.Standbys{leadership.AnyOf(1, []string{"db-1", "db-2"})}))
		g.Expect(leadership.Of(lease).PreviousUntil).To(Equal(lsn.LSN(0x3000100)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	// db-1 has not received 0/3000100: the previous standbys still matter.
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Previous).NotTo(BeEmpty())
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())

	// The leader and db-2 (on its way out) go silent.
	agents[0].set(func(a *hollowAgent) { a.frozen = true })
	agents[2].set(func(a *hollowAgent) { a.frozen = true })
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonFailoverBlocked)
		g.Expect(conditionMessage(got, regentv1.ConditionDegraded)).To(
			ContainSubstring("1 of the 2 followers of ANY 1 (db-1, db-2) reported sealed positions, 2 needed"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1))
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())
}

// Once the remaining standbys hold the leader's position of the moment it
// ran the new setting, the previous one is forgotten.
func TestSyncScaleDownSettles(t *testing.T) {
	ns, _ := liveSyncCluster(t, 0x3000100, 0x3000100, 0x3000100)
	NewWithT(t).Expect(update(t, &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}},
		func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](2) })).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_1")`))
		g.Expect(leadership.Of(lease).Previous).To(BeEmpty())
		g.Expect(leadership.Of(lease).PreviousUntil).To(BeZero())
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// livePreferredCluster is liveCluster in Sync mode with ANY 2 of the two
// followers and dataDurability Preferred, every member at 0/3000100.
func livePreferredCluster(t *testing.T) (string, []*hollowAgent) {
	t.Helper()
	return liveCluster(t, func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = regentv1.ReplicationSync
		rs.Spec.Replication.SyncReplicas = ptr.To[int32](2)
		rs.Spec.Replication.DataDurability = regentv1.DataDurabilityPreferred
	}, 0x3000100, 0x3000100, 0x3000100)
}

// With dataDurability Preferred, a follower lost for longer than the
// lease duration leaves the quorum, so writes go on with the followers
// left (an event says so); the election honours the old quorum until the
// remaining follower holds what it acknowledged; the follower's return
// restores the spec's quorum.
func TestPreferredQuorumFollowsTheFollowersStanding(t *testing.T) {
	ns, agents := livePreferredCluster(t)
	full := `ANY 2 ("db_1", "db_2")`
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(full))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// db-2 goes silent and unready: for the lease duration (3 s) the
	// quorum stays, then it drops db-2.
	agents[2].set(func(a *hollowAgent) { a.frozen = true })
	lost := time.Now()
	setPodReady(t, NewWithT(t), ns, "db-2", false)
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_1")`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	// The operator clocks the absence itself, from a pass after the
	// test's own clock started.
	if waited := time.Since(lost); waited < 3*time.Second {
		t.Errorf("the quorum was lowered %s after db-2 went unready, before the lease duration (3 s)", waited)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		hasEvent(t, g, ns, regentv1.EventSyncQuorumLowered, `commits now wait for ANY 1 ("db_1") instead of ANY 2`)
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Previous).To(BeEmpty(),
			"db-1 holds the leader's position: the old quorum no longer matters")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// db-2 comes back: the spec's quorum again.
	agents[2].set(func(a *hollowAgent) { a.frozen = false })
	setPodReady(t, NewWithT(t), ns, "db-2", true)
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(full))
		hasEvent(t, g, ns, regentv1.EventSyncQuorumRestored, "commits wait for "+full+" again")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A follower lost right after it first stood: db-2's pod was never
// reported ready (its Ready condition is False from an hour ago) but its
// agent streamed, so it stood in the quorum; frozen, it leaves the quorum
// only after the operator itself has seen it gone for the whole lease
// duration (3 s), not at the first pass, which the pod's old condition
// would allow.
func TestPreferredQuorumWaitsALeaseForAFollowerLostRightAfterItStood(t *testing.T) {
	ns, agents := livePreferredCluster(t)
	g := NewWithT(t)
	pod := get(t, g, ns, "db-2", &corev1.Pod{})
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))},
	}
	g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := k8s.Status().Update(t.Context(), pod)
		if err != nil {
			cur := get(t, g, ns, "db-2", &corev1.Pod{})
			cur.Status.Conditions = pod.Status.Conditions
			pod = cur
		}
		return err
	})).To(Succeed())
	// Its agent streams: it stands, for longer than the lease.
	full := `ANY 2 ("db_1", "db_2")`
	NewWithT(t).Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(full))
	}).WithTimeout(4 * time.Second).WithPolling(poll).Should(Succeed())

	agents[2].set(func(a *hollowAgent) { a.frozen = true })
	lost := time.Now()
	// A pass at once (an annotation change starts one): it must not lower
	// the quorum yet.
	rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	patch := client.MergeFrom(rs.DeepCopy())
	metav1.SetMetaDataAnnotation(&rs.ObjectMeta, "test.regent.dev/poke", "1")
	g.Expect(k8s.Patch(t.Context(), rs, patch)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).Standbys.String()).To(Equal(`ANY 1 ("db_1")`))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	waited := time.Since(lost)
	t.Logf("db-2 frozen → quorum lowered after %s (lease 3 s)", waited.Round(time.Millisecond))
	if waited < 3*time.Second {
		t.Errorf("the quorum was lowered %s after db-2 froze, before the operator had seen it gone for the lease duration (3 s)",
			waited.Round(time.Millisecond))
	}
}

// A healthy cluster under writes costs the operator a pass (a read of each
// agent) per lease duration or healthy period: not one per Lease renewal
// (every 200 ms here), nor one started by the status the last pass wrote
// (the members' positions move with every write).
func TestHealthyClusterUnderWritesIsReadOnAModestPeriod(t *testing.T) {
	_, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	for _, a := range agents {
		a.set(func(a *hollowAgent) { a.writing, a.reads = true, 0 })
	}
	start := time.Now()
	reads := func() int {
		agents[1].mu.Lock()
		defer agents[1].mu.Unlock()
		return agents[1].reads
	}
	// The lease is 3 s: a pass at each expiry it computed, plus a few
	// woken by the first positions' changes.
	NewWithT(t).Consistently(func(g Gomega) {
		budget := 3 + int(time.Since(start)/(2*time.Second))
		g.Expect(reads()).To(BeNumerically("<=", budget), "reads of db-1's agent in %s", time.Since(start).Round(time.Millisecond))
	}).WithTimeout(8 * time.Second).WithPolling(poll).Should(Succeed())
	t.Logf("%d reads of db-1's agent in %s", reads(), time.Since(start).Round(time.Millisecond))
}

// A leader that holds its Lease but is not ready says why in the
// conditions, in its agent's words: a password the kept data does not
// know, a start PostgreSQL refused.
func TestNotReadyLeaderSaysWhyInTheConditions(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	const why = `connect to create roles: failed SASL auth (FATAL: password authentication failed for user "postgres")`
	agents[0].set(func(a *hollowAgent) { a.reason = why })
	setPodReady(t, NewWithT(t), ns, "db-0", false)
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionAvailable, metav1.ConditionFalse, regentv1.ReasonLeaderNotReady)
		g.Expect(conditionMessage(got, regentv1.ConditionAvailable)).To(Equal("db-0 leads epoch 1 but is not ready: " + why))
		g.Expect(conditionMessage(got, regentv1.ConditionDegraded)).To(HaveSuffix(why))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestFailoverDisabledIsRefused(t *testing.T) {
	ns, agents := liveCluster(t, func(rs *regentv1.ReplicaSet) { rs.Spec.Failover.Enabled = ptr.To(false) },
		0x3000000, 0x3000000, 0x3000000)
	agents[0].set(func(a *hollowAgent) { a.crashed = true })
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonFailoverRefused)
		hasEvent(t, g, ns, regentv1.EventFailoverRefused, "failover is disabled")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	lease := get(t, NewWithT(t), ns, "db-leader", &coordinationv1.Lease{})
	NewWithT(t).Expect(leadership.Of(lease).SealedEpoch).To(BeZero())
}

func TestSwitchover(t *testing.T) {
	ns, _ := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	g := NewWithT(t)

	// A bad target is refused with an event and a condition.
	rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	g.Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Annotations = map[string]string{names.AnnotationSwitchoverTo: "db-7"}
	})).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonSwitchoverRefused)
		hasEvent(t, g, ns, regentv1.EventSwitchoverRefused, "no pod db-7")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Expect(ptr.Deref(get(t, g, ns, "db-leader", &coordinationv1.Lease{}).Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1))

	g.Expect(update(t, rs, func(rs *regentv1.ReplicaSet) { rs.Annotations[names.AnnotationSwitchoverTo] = "db-2" })).To(Succeed())
	expectLeader(t, ns, "db-2")
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Annotations).NotTo(HaveKey(names.AnnotationSwitchoverTo), "the request is cleared once done")
		g.Expect(got.Status.LastFailover).NotTo(BeNil())
		g.Expect(got.Status.LastFailover.Kind).To(Equal(regentv1.FailoverKindSwitchover))
		g.Expect(got.Status.LastFailover.EstimatedLostBytes).To(Equal(ptr.To[int64](0)))
		hasEvent(t, g, ns, regentv1.EventSwitchoverRequested, "hand leadership of epoch 1 to db-2")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A switchover is not only for a healthy cluster: with a follower down
// (Degraded=FollowersNotReady), a person can still hand leadership to the
// follower that is fit.
func TestSwitchoverWhileDegraded(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	agents[2].set(func(a *hollowAgent) { a.frozen = true })
	setPodReady(t, NewWithT(t), ns, "db-2", false)
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonFollowersNotReady)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	rs := get(t, NewWithT(t), ns, "db", &regentv1.ReplicaSet{})
	NewWithT(t).Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Annotations = map[string]string{names.AnnotationSwitchoverTo: "db-1"}
	})).To(Succeed())
	expectLeader(t, ns, "db-1")
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.LastFailover).NotTo(BeNil())
		g.Expect(got.Status.LastFailover.Kind).To(Equal(regentv1.FailoverKindSwitchover))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A leader whose node stopped reporting: the node controller marks its pod
// not ready (Ready=False, its containers still ready), no Service routes
// to it, and its agent still renews. The operator switches over to the
// most advanced follower; the leader hands over as in any switchover.
func TestALeaderOnALostNodeIsSwitchedOver(t *testing.T) {
	ns, _ := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000100)
	g := NewWithT(t)
	pod := get(t, g, ns, "db-0", &corev1.Pod{})
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			pod.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	g.Expect(k8s.Status().Update(t.Context(), pod)).To(Succeed())
	expectLeader(t, ns, "db-2")
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.LastFailover).NotTo(BeNil())
		g.Expect(got.Status.LastFailover.Kind).To(Equal(regentv1.FailoverKindSwitchover))
		hasEvent(t, g, ns, regentv1.EventLeaderUnserved, "asked it to hand leadership of epoch 1 to db-2")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// An operator that stopped after sealing (phase one) finishes the job when
// it runs again: the seal on the Lease is all it needs.
func TestSealedEpochIsFinished(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000100)
	agents[0].set(func(a *hollowAgent) { a.frozen = true })
	lease := get(t, NewWithT(t), ns, "db-leader", &coordinationv1.Lease{})
	NewWithT(t).Expect(update(t, lease, func(l *coordinationv1.Lease) {
		s := leadership.Of(l)
		s.SealedEpoch = 1
		leadership.Encode(s, l)
	})).To(Succeed())
	expectLeader(t, ns, "db-2")
}

// An operator that stopped right after moving the Lease (step 2: the old
// leader's label already gone, the winner not labelled yet) leaves only
// the Lease behind; an operator that never saw the cluster, as after a
// restart, finishes the promotion from it: the winner labelled at the new
// epoch, the leader Service moved, the status saying so. (The cluster's
// Lease is kept with its data, so the ReplicaSet finds it on creation, as
// the restarted operator finds it in the API server.)
func TestOperatorRestartedAfterTheLeaseMoveFinishesThePromotion(t *testing.T) {
	ns := newNamespace(t)
	moved := metav1.NewMicroTime(time.Now())
	NewWithT(t).Expect(k8s.Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-leader", Labels: names.Labels("db")},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("db-2"), LeaseTransitions: ptr.To[int32](2),
			LeaseDurationSeconds: ptr.To[int32](3), AcquireTime: &moved},
	})).To(Succeed())
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Failover.LeaseDurationSeconds = ptr.To[int32](3)
	}))
	waitReconciled(t, rs)
	for i := range 3 {
		pod := names.Pod("db", i)
		NewWithT(t).Eventually(func(g Gomega) { get(t, g, ns, pod, &corev1.Pod{}) }).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		setPodReady(t, NewWithT(t), ns, pod, true)
		startHollowAgent(t, ns, pod, 0x3000000)
	}
	expectLeader(t, ns, "db-2")
}

func conditionMessage(rs *regentv1.ReplicaSet, typ string) string {
	for _, c := range rs.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// kubelet plays the part of the nodes for a namespace: pods come up ready
// and deleted pods go at once. It returns how many of the wanted pods
// were, at worst, missing or not ready at the same time.
func kubelet(t *testing.T, ns string, want int) func() int {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	worst := 0
	go func() {
		defer close(done)
		g := NewWithT(t)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			pods := &corev1.PodList{}
			if k8s.List(t.Context(), pods, client.InNamespace(ns)) != nil {
				continue
			}
			ready := 0
			for i := range pods.Items {
				p := &pods.Items[i]
				switch {
				case !p.DeletionTimestamp.IsZero():
					_ = k8s.Delete(t.Context(), p, client.GracePeriodSeconds(0))
				case podReady(p):
					ready++
				default:
					func() {
						defer func() { _ = recover() }()
						setPodReady(t, g, ns, p.Name, true)
					}()
				}
			}
			worst = max(worst, want-ready)
		}
	}()
	return func() int { close(stop); <-done; return worst }
}

// A new pod template rolls out one pod at a time, followers first, with a
// single switchover away from the leader before it restarts.
func TestRollingUpdateRestartsFollowersFirstWithOneSwitchover(t *testing.T) {
	ns, _ := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000100)
	stopKubelet := kubelet(t, ns, 3)
	before := get(t, NewWithT(t), ns, "db", &appsv1.StatefulSet{}).Status.UpdateRevision
	rs := get(t, NewWithT(t), ns, "db", &regentv1.ReplicaSet{})
	NewWithT(t).Expect(update(t, rs, func(rs *regentv1.ReplicaSet) {
		rs.Spec.Postgres.Parameters = map[string]string{"work_mem": "8MB"}
	})).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		sts := get(t, g, ns, "db", &appsv1.StatefulSet{})
		g.Expect(sts.Status.UpdateRevision).NotTo(BeElementOf("", before))
		for _, name := range []string{"db-0", "db-1", "db-2"} {
			pod := get(t, g, ns, name, &corev1.Pod{})
			g.Expect(pod.Labels).To(HaveKeyWithValue(appsv1.ControllerRevisionHashLabelKey, sts.Status.UpdateRevision), name)
		}
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Phase).To(Equal(regentv1.PhaseHealthy))
	}).WithTimeout(2 * timeout).WithPolling(poll).Should(Succeed())
	worst := stopKubelet()
	NewWithT(t).Expect(worst).To(BeNumerically("<=", 1), "more than one pod was down at once")
	// One switchover, to the most advanced follower.
	expectLeader(t, ns, "db-2")
	got := get(t, NewWithT(t), ns, "db", &regentv1.ReplicaSet{})
	NewWithT(t).Expect(got.Status.LastFailover.Kind).To(Equal(regentv1.FailoverKindSwitchover))
}

// The Async bound survives an operator restart: the leader's position
// travels with its renewals, so an operator that lost its memory between
// the leader's loss and the election still refuses followers further
// behind than maxLagBytes (here 32 MiB behind; the bound is 1 MiB).
func TestARestartedOperatorStillRefusesAFollowerBeyondMaxLagBytes(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x5000000, 0x3000000, 0x3000000)
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(leadership.Of(lease).LeaderLSN()).To(BeEquivalentTo(0x5000000))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	agents[0].set(func(a *hollowAgent) { a.frozen = true })
	operator.memory.forget(client.ObjectKey{Namespace: ns, Name: "db"}) // what a restart loses
	g.Eventually(func(g Gomega) {
		hasEvent(t, g, ns, regentv1.EventFailoverWaiting, "no follower can be promoted")
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		for _, m := range got.Status.Members {
			if m.Name != "db-0" {
				g.Expect(m.Reason).To(ContainSubstring("more than maxLagBytes"), "%s", m.Name)
			}
		}
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Consistently(func(g Gomega) {
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(1), "a follower 32 MiB behind was promoted")
	}).WithTimeout(3 * time.Second).WithPolling(poll).Should(Succeed())
}

// The operator's memory of a cluster (renewals, absences, silent agents)
// goes with its ReplicaSet: a deleted cluster costs nothing afterwards.
func TestDeletedClusterIsForgotten(t *testing.T) {
	ns, _ := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	key := client.ObjectKey{Namespace: ns, Name: "db"}
	NewWithT(t).Expect(operator.memory.remembers(key)).To(BeTrue(), "a live cluster is remembered")
	NewWithT(t).Expect(k8s.Delete(t.Context(), &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}})).To(Succeed())
	NewWithT(t).Eventually(func() bool { return operator.memory.remembers(key) }).
		WithTimeout(timeout).WithPolling(poll).Should(BeFalse(), "the deleted cluster is still remembered")
}
