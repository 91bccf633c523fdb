package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// NetworkPolicies are the operator's settings for the NetworkPolicy it
// gives every cluster when it runs with them: the relay and the agents' API only from the cluster's own
// pods and the operator, PostgreSQL from spec.networkPolicy.postgresFrom.
type NetworkPolicies struct {
	// OperatorNamespace and OperatorLabels select the operator's pods,
	// which read the agents' /status.
	OperatorNamespace string
	OperatorLabels    map[string]string
}

// renderNetworkPolicy is the cluster's NetworkPolicy. Only ingress is
// restricted: what the pods reach (the API server, each other) is left to
// the cluster's own egress policies.
func renderNetworkPolicy(rs *regentv1.ReplicaSet, np *NetworkPolicies) (*networkingv1ac.NetworkPolicyApplyConfiguration, error) {
	port := func(p int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
		return networkingv1ac.NetworkPolicyPort().WithProtocol(corev1.ProtocolTCP).WithPort(intstr.FromInt32(p))
	}
	members := networkingv1ac.NetworkPolicyPeer().WithPodSelector(labelSelector(names.SelectorLabels(rs.Name)))
	operator := networkingv1ac.NetworkPolicyPeer().
		WithNamespaceSelector(labelSelector(map[string]string{corev1.LabelMetadataName: np.OperatorNamespace})).
		WithPodSelector(labelSelector(np.OperatorLabels))
	postgres := networkingv1ac.NetworkPolicyIngressRule().WithPorts(port(names.PortPostgres))
	if from := rs.Spec.NetworkPolicy.PostgresFrom; len(from) > 0 {
		// The apply configuration has the API type's JSON shape.
		var peers []*networkingv1ac.NetworkPolicyPeerApplyConfiguration
		b, err := json.Marshal(from)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &peers); err != nil {
			return nil, err
		}
		postgres.WithFrom(peers...)
	}
	return networkingv1ac.NetworkPolicy(names.NetworkPolicy(rs.Name), rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(labelSelector(names.SelectorLabels(rs.Name))).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(
				networkingv1ac.NetworkPolicyIngressRule().
					WithPorts(port(names.PortRelay), port(names.PortAgentHTTP)).
					WithFrom(members, operator),
				postgres,
			)), nil
}

// reconcileNetworkPolicy applies the cluster's NetworkPolicy when the
// operator runs with network policies, and removes the one it made when
// it no longer does.
func (r *ReplicaSetReconciler) reconcileNetworkPolicy(ctx context.Context, rs *regentv1.ReplicaSet,
	apply func(string, runtime.ApplyConfiguration, client.Object, string) error) error {
	name := names.NetworkPolicy(rs.Name)
	if r.NetworkPolicies != nil {
		np, err := renderNetworkPolicy(rs, r.NetworkPolicies)
		if err != nil {
			return err
		}
		return apply("apply NetworkPolicy", np, &networkingv1.NetworkPolicy{}, name)
	}
	existing := &networkingv1.NetworkPolicy{}
	err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: name}, existing)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read NetworkPolicy %s: %w", name, err)
	case !metav1.IsControlledBy(existing, rs):
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, existing))
}
