package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// claimTemplateSize is the storage request of the StatefulSet's data claim
// template.
func claimTemplateSize(sts *appsv1.StatefulSet) (resource.Quantity, bool) {
	for _, t := range sts.Spec.VolumeClaimTemplates {
		if t.Name == names.VolumeData {
			q, ok := t.Spec.Resources.Requests[corev1.ResourceStorage]
			return q, ok
		}
	}
	return resource.Quantity{}, false
}

// growVolumes raises the storage request of every existing data claim of rs
// to spec.storage.size. (The CRD refuses a smaller size; the StatefulSet's
// claim template cannot change, so the claims are patched one by one. The
// StorageClass must allow expansion; if it does not, the API server says so
// and the error surfaces in the Degraded condition.)
func (r *ReplicaSetReconciler) growVolumes(ctx context.Context, rs *regentv1.ReplicaSet) error {
	want, err := rs.StorageSize()
	if err != nil {
		return err
	}
	list := &corev1.PersistentVolumeClaimList{}
	if err := r.List(ctx, list, client.InNamespace(rs.Namespace),
		client.MatchingLabels(names.SelectorLabels(rs.Name))); err != nil {
		return err
	}
	for i := range list.Items {
		pvc := &list.Items[i]
		have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		// Only a bound claim can grow; an unbound one is provisioned at
		// the template's size and grown on a later pass.
		if have.Cmp(want) >= 0 || pvc.Status.Phase != corev1.ClaimBound {
			continue
		}
		patch := client.MergeFrom(pvc.DeepCopy())
		if pvc.Spec.Resources.Requests == nil {
			pvc.Spec.Resources.Requests = corev1.ResourceList{}
		}
		pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
		if err := r.Patch(ctx, pvc, patch); err != nil {
			return fmt.Errorf("grow %s from %s to %s: %w", pvc.Name, have.String(), want.String(), err)
		}
		ctrl.LoggerFrom(ctx).Info("Growing data volume", "pvc", pvc.Name, "from", have.String(), "to", want.String())
	}
	return nil
}
