package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/instance"
)

// reconcileLease returns the cluster's leadership Lease, creating it for a
// new cluster: held by <rs>-0 at its first epoch, never renewed yet. The Lease is
// created, never applied: after creation only the holder's agent renews it
// and only the failover logic moves it, each with optimistic concurrency
// (docs/protocol.md). With pvcRetentionPolicy Retain it outlives the
// ReplicaSet, as the data does (keptWithTheData): a ReplicaSet recreated
// under the same name adopts it and goes on from the epoch and the leader
// it records, rather than starting over at epoch 1 with <rs>-0, whatever
// the data on the kept volumes.
func (r *ReplicaSetReconciler) reconcileLease(ctx context.Context, rs *regentv1.ReplicaSet) (*coordinationv1.Lease, error) {
	key := client.ObjectKey{Namespace: rs.Namespace, Name: names.Lease(rs.Name)}
	lease := &coordinationv1.Lease{}
	err := r.Get(ctx, key, lease)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, lease)
	}
	if err == nil {
		return lease, r.ownLease(ctx, rs, lease)
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}

	first, err := r.firstEpoch(ctx, rs)
	if err != nil {
		return nil, err
	}
	lease = newLease(rs, metav1.NewMicroTime(r.now()), first)
	if !keptWithTheData(rs) {
		if err := controllerutil.SetControllerReference(rs, lease, r.Scheme()); err != nil {
			return nil, err
		}
	}
	// AlreadyExists means the cache was behind: the error retries the pass.
	if err := r.Create(ctx, lease); err != nil {
		return nil, err
	}
	ctrl.LoggerFrom(ctx).Info("Created the leader Lease", "lease", key.Name, "holder", *lease.Spec.HolderIdentity, "epoch", first)
	r.Recorder.Eventf(rs, lease, corev1.EventTypeNormal, regentv1.EventLeaseCreated, "CreateLease",
		"Created Lease %s: %s leads epoch %d", key.Name, *lease.Spec.HolderIdentity, first)
	return lease, nil
}

// firstEpoch is a new cluster's first epoch: 1, or for a cluster restored
// from a backup one above its source's newest timeline (the promotion
// that ends the recovery takes the first epoch as its timeline, and
// timeline IDs never repeat). It also checks, before any pod exists, that
// the source can be read and holds a backup for the target.
func (r *ReplicaSetReconciler) firstEpoch(ctx context.Context, rs *regentv1.ReplicaSet) (int64, error) {
	rec := rs.Spec.Bootstrap.Recovery
	if rec == nil {
		return 1, nil
	}
	src, err := r.openStore(ctx, rs.Namespace, &rec.ObjectStore, storePath(&rec.ObjectStore, rs))
	if err != nil {
		return 0, &SpecError{fmt.Errorf("spec.bootstrap.recovery.objectStore: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, newest, err := instance.PlanRestore(ctx, src, recoveryRequest(rec))
	if err != nil {
		return 0, &SpecError{fmt.Errorf("spec.bootstrap.recovery: %w", err)}
	}
	return newest + 1, nil
}

// SpecError is a reconcile error the spec causes and only a person can
// fix: the Degraded condition quotes it.
type SpecError struct{ Err error }

func (e *SpecError) Error() string { return e.Err.Error() }
func (e *SpecError) Unwrap() error { return e.Err }

// ownLease checks that an existing Lease is this cluster's and sets its
// owner reference as the retention policy wants: none when it is kept with
// the data (adopting the Lease of an earlier ReplicaSet of the same name),
// rs as controller when it goes with rs. A Lease that another object
// controls, or that Regent did not label for this cluster, is not touched.
func (r *ReplicaSetReconciler) ownLease(ctx context.Context, rs *regentv1.ReplicaSet, lease *coordinationv1.Lease) error {
	ref := metav1.GetControllerOf(lease)
	ours := lease.Labels[names.LabelCluster] == rs.Name && lease.Labels[names.LabelManagedBy] == names.ManagedBy
	switch {
	case ref != nil && ref.UID == rs.UID:
	case ours && (ref == nil || ref.APIVersion == regentv1.GroupVersion.String() && ref.Kind == "ReplicaSet" && ref.Name == rs.Name):
		// Ours, or left by an earlier ReplicaSet of this name.
	default:
		return &ForeignObjectError{Kind: "Lease", Name: lease.Name}
	}
	kept := keptWithTheData(rs)
	if kept && ref == nil || !kept && ref != nil && ref.UID == rs.UID {
		return nil
	}
	patch := client.MergeFromWithOptions(lease.DeepCopy(), client.MergeFromWithOptimisticLock{})
	lease.OwnerReferences = slices.DeleteFunc(lease.OwnerReferences, func(o metav1.OwnerReference) bool {
		return ptr.Deref(o.Controller, false)
	})
	if !kept {
		if err := controllerutil.SetControllerReference(rs, lease, r.Scheme()); err != nil {
			return err
		}
	}
	if err := r.Patch(ctx, lease, patch); err != nil {
		return fmt.Errorf("set the owner of Lease %s: %w", lease.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Adopted the leader Lease", "lease", lease.Name, "keptWithTheData", kept,
		"holder", ptr.Deref(lease.Spec.HolderIdentity, ""), "epoch", ptr.Deref(lease.Spec.LeaseTransitions, 0))
	return nil
}

// newLease is the Lease of a new cluster. renewTime stays empty until the
// first leader's agent renews it: the Lease was never live.
func newLease(rs *regentv1.ReplicaSet, now metav1.MicroTime, first int64) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      names.Lease(rs.Name),
			Namespace: rs.Namespace,
			Labels:    names.Labels(rs.Name),
			Annotations: map[string]string{
				names.AnnotationFailsafe: strconv.FormatBool(rs.FailsafeEnabled()),
			},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(names.Pod(rs.Name, 0)),
			LeaseDurationSeconds: ptr.To(rs.LeaseDurationSeconds()),
			LeaseTransitions:     ptr.To(int32(first)), //nolint:gosec // G115: an epoch above a store's newest timeline
			AcquireTime:          &now,
		},
	}
	s := leadership.Of(l)
	s.FirstEpoch = first
	leadership.Encode(s, l)
	return l
}
