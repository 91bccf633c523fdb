package controllers

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// reconcileLease returns the cluster's leadership Lease, creating it for a
// new cluster: held by <rs>-0 at epoch 1, never renewed yet. The Lease is
// created, never applied: after creation only the holder's agent renews it
// and only the failover logic moves it, each with optimistic concurrency
// (DESIGN.md §5).
func (r *ReplicaSetReconciler) reconcileLease(ctx context.Context, rs *regentv1.ReplicaSet) (*coordinationv1.Lease, error) {
	key := client.ObjectKey{Namespace: rs.Namespace, Name: names.Lease(rs.Name)}
	lease := &coordinationv1.Lease{}
	if err := r.ensureOurs(ctx, rs, lease, key.Name); err != nil {
		return nil, err
	}
	err := r.Get(ctx, key, lease)
	if err == nil {
		return lease, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}

	lease = newLease(rs, metav1.NewMicroTime(r.now()))
	if err := controllerutil.SetControllerReference(rs, lease, r.Scheme()); err != nil {
		return nil, err
	}
	// AlreadyExists means the cache was behind: the error retries the pass.
	if err := r.Create(ctx, lease); err != nil {
		return nil, err
	}
	ctrl.LoggerFrom(ctx).Info("Created the leader Lease", "lease", key.Name, "holder", *lease.Spec.HolderIdentity, "epoch", 1)
	r.Recorder.Eventf(rs, lease, corev1.EventTypeNormal, regentv1.EventLeaseCreated, "CreateLease",
		"Created Lease %s: %s leads epoch 1", key.Name, *lease.Spec.HolderIdentity)
	return lease, nil
}

// newLease is the Lease of a new cluster. renewTime stays empty until the
// first leader's agent renews it: the Lease was never live.
func newLease(rs *regentv1.ReplicaSet, now metav1.MicroTime) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      names.Lease(rs.Name),
			Namespace: rs.Namespace,
			Labels:    names.Labels(rs.Name),
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(names.Pod(rs.Name, 0)),
			LeaseDurationSeconds: ptr.To(rs.LeaseDurationSeconds()),
			LeaseTransitions:     ptr.To[int32](1),
			AcquireTime:          &now,
		},
	}
}
