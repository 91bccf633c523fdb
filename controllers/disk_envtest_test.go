package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// Each member's disk use is in the status; a volume 80 % full makes the
// cluster Degraded and sends a Warning, and room again clears it.
func TestAFillingVolumeDegradesTheCluster(t *testing.T) {
	ns, agents := liveCluster(t, nil, 0x3000000, 0x3000000, 0x3000000)
	const gib = 1 << 30
	for _, a := range agents {
		a.set(func(a *hollowAgent) { a.diskUsed, a.diskTotal = gib/4, gib })
	}
	NewWithT(t).Eventually(func(g Gomega) {
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(rs.Status.Members).To(HaveLen(3))
		for _, m := range rs.Status.Members {
			g.Expect(m.DiskCapacityBytes).To(HaveValue(BeEquivalentTo(gib)), m.Name)
			g.Expect(m.DiskUsedBytes).To(HaveValue(BeEquivalentTo(gib/4)), m.Name)
		}
		g.Expect(meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionDegraded).Reason).
			To(Equal(regentv1.ReasonAllReplicasReady))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	agents[1].set(func(a *hollowAgent) { a.diskUsed = gib * 7 / 8 })
	NewWithT(t).Eventually(func(g Gomega) {
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		c := meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionDegraded)
		g.Expect(c.Reason).To(Equal(regentv1.ReasonDiskFilling))
		g.Expect(c.Message).To(ContainSubstring("db-1 87%"))
		hasEvent(t, g, ns, regentv1.EventDiskFilling, "db-1 87%")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	agents[1].set(func(a *hollowAgent) { a.diskUsed = gib / 2 })
	NewWithT(t).Eventually(func(g Gomega) {
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(meta.FindStatusCondition(rs.Status.Conditions, regentv1.ConditionDegraded).Reason).
			To(Equal(regentv1.ReasonAllReplicasReady))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}
