package controllers

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// contactPeriod is how often the operator checks that it reaches the
	// API server (and etcd behind it).
	contactPeriod = 500 * time.Millisecond
	// contactLostAfter is the silence after which the operator counts
	// itself cut off from the API server.
	contactLostAfter = 2 * time.Second
)

// apiContact restarts the operator's lease clocks when it reaches the API
// server again after an outage: a renewal cannot be seen while the API
// server cannot be reached, so no time without contact counts towards a
// leader's expiry (a leader writing on its failsafe meanwhile renews as
// soon as it can). Waiting longer is always safe. Every operator replica
// does it, the standbys too (their memory may take over).
type apiContact struct {
	r      *ReplicaSetReconciler
	reader client.Reader
}

// NeedLeaderElection: the standbys keep their clocks too.
func (apiContact) NeedLeaderElection() bool { return false }

// Start probes with a quorum read (a list of one Lease, from the API
// server, not the cache) until ctx ends.
func (c apiContact) Start(ctx context.Context) error {
	last := c.r.now()
	t := time.NewTicker(contactPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, contactLostAfter)
		err := c.reader.List(rctx, &coordinationv1.LeaseList{}, client.Limit(1))
		cancel()
		if err != nil {
			continue
		}
		now := c.r.now()
		if gap := now.Sub(last); gap > contactLostAfter {
			c.r.memory.restartClocks(now)
			ctrl.Log.WithName("api-contact").Info("Reached the API server again: every lease's expiry counts from now",
				"withoutContact", gap.Round(time.Millisecond).String())
		}
		last = now
	}
}
