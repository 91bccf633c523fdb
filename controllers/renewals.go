package controllers

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// renewalWatch notes every cluster's Lease renewals in the memory on every
// operator replica, the standbys included (it needs no leader election).
// A standby that takes over then knows, by its own clock, when each
// leader last renewed, and waits only what is left of the lease before it
// fails over a leader lost with the operator it replaces, not a whole
// lease from its own start.
type renewalWatch struct {
	r     *ReplicaSetReconciler
	cache cache.Cache
}

// NeedLeaderElection: the standbys watch too.
func (renewalWatch) NeedLeaderElection() bool { return false }

// Start adds the handler to the manager's Lease informer and waits.
func (w renewalWatch) Start(ctx context.Context) error {
	informer, err := w.cache.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return fmt.Errorf("the Lease informer: %w", err)
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*coordinationv1.Lease)
			cur, ok2 := newObj.(*coordinationv1.Lease)
			cluster := ""
			if ok2 {
				cluster = cur.Labels[names.LabelCluster]
			}
			// Renewals only: a Lease kept with the data of a deleted
			// cluster is not remembered again by a release.
			if !ok1 || !ok2 || cluster == "" || cur.Spec.RenewTime == nil ||
				(old.Spec.RenewTime != nil && old.Spec.RenewTime.Equal(cur.Spec.RenewTime)) {
				return
			}
			key := types.NamespacedName{Namespace: cur.Namespace, Name: cluster}
			// Nor the renewals of a cluster whose ReplicaSet is gone (its
			// agents shutting down): the reconciler forgot it.
			if err := w.cache.Get(ctx, key, &regentv1.ReplicaSet{}); err != nil {
				return
			}
			w.r.memory.noteRenewalSeen(key, cur, w.r.now())
		},
	}); err != nil {
		return fmt.Errorf("watch the Leases' renewals: %w", err)
	}
	<-ctx.Done()
	return nil
}
