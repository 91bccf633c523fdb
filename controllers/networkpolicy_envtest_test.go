package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// testNetworkPolicies is how the envtest operator runs: with network
// policies, its pods labelled as the chart labels them.
var testNetworkPolicies = &NetworkPolicies{OperatorNamespace: "regent-system",
	OperatorLabels: map[string]string{"app.kubernetes.io/name": "regent", "app.kubernetes.io/component": "operator"}}

// With network policies on, a cluster's relay and agent ports are open to
// its own pods and the operator only, and PostgreSQL to the sources its
// spec names (the API server accepts them as the user wrote them).
func TestNetworkPolicyOpensTheRelayToMembersAndTheOperatorOnly(t *testing.T) {
	ns := newNamespace(t)
	clients := []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.128/25"}}},
	}
	createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.NetworkPolicy.PostgresFrom = clients
	}))
	tcp := corev1.ProtocolTCP
	port := func(p int) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr.To(intstr.FromInt(p))}
	}
	members := &metav1.LabelSelector{MatchLabels: map[string]string{
		"app.kubernetes.io/name": "postgres", "regent.dev/cluster": "db"}}
	NewWithT(t).Eventually(func(g Gomega) {
		np := get(t, g, ns, "db", &networkingv1.NetworkPolicy{})
		g.Expect(np.OwnerReferences).To(HaveLen(1))
		g.Expect(np.Spec.PodSelector.MatchLabels).To(Equal(members.MatchLabels))
		g.Expect(np.Spec.PolicyTypes).To(Equal([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress}))
		g.Expect(np.Spec.Ingress).To(Equal([]networkingv1.NetworkPolicyIngressRule{
			{Ports: []networkingv1.NetworkPolicyPort{port(5433), port(8008)}, From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: members},
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "regent-system"}},
					PodSelector: &metav1.LabelSelector{MatchLabels: testNetworkPolicies.OperatorLabels}},
			}},
			{Ports: []networkingv1.NetworkPolicyPort{port(5432)}, From: clients},
		}))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}
