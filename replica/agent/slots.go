package agent

import (
	"context"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// The leader keeps a physical slot for each follower (created when the
// follower's relay opens, under its pod's name), and each slot holds WAL
// for its follower. A member that leaves the cluster (scaled away) must
// not hold WAL forever: the leader drops its slot, and the relay refuses
// it, once the StatefulSet no longer counts its ordinal.

// membership is how many members the cluster has, by the StatefulSet's
// replicas; 0 until read (or without a StatefulSet, as in tests that run
// pods by hand), when every ordinal the API allows counts.
type membership struct{ replicas atomic.Int32 }

// counts reports whether ordinal i is a member now.
func (m *membership) counts(i int) bool {
	n := m.replicas.Load()
	return n <= 0 || i < int(n)
}

// slotPruneEvery is how often the leader looks for slots of former members.
const slotPruneEvery = 5 * time.Second

// keepMembership reads the StatefulSet's replicas and, on the leader, drops
// the inactive slots of former members.
func (a *Agent) keepMembership(ctx context.Context) {
	t := time.NewTicker(slotPruneEvery)
	defer t.Stop()
	for {
		a.readMembership(ctx)
		a.pruneSlots(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) readMembership(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sts, err := a.cfg.Client.AppsV1().StatefulSets(a.cfg.Namespace).Get(rctx, names.StatefulSet(a.cfg.Cluster), metav1GetOptions)
	switch {
	case apierrors.IsNotFound(err):
		a.members.replicas.Store(0)
	case err != nil:
		// Keep what was last read: an API server outage changes nothing.
	case sts.Spec.Replicas != nil:
		a.members.replicas.Store(*sts.Spec.Replicas)
	}
}

// pruneSlots drops, on the leader, every inactive physical slot named for
// an ordinal of this cluster that is no longer a member. An active slot is
// left for a later round: its pod is still leaving.
func (a *Agent) pruneSlots(ctx context.Context) {
	a.ls.mu.Lock()
	leading := a.ls.mode == api.ModeLeader
	a.ls.mu.Unlock()
	if !leading || a.members.replicas.Load() <= 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := a.localConn(qctx)
	if err != nil {
		return
	}
	defer conn.Close(qctx)
	rows, err := conn.Query(qctx, "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT active")
	if err != nil {
		return
	}
	var former []string
	for rows.Next() {
		var slot string
		if rows.Scan(&slot) != nil {
			continue
		}
		if i, ok := names.Ordinal(a.cfg.Cluster, names.SlotPod(slot)); ok && !a.members.counts(i) {
			former = append(former, slot)
		}
	}
	rows.Close()
	for _, slot := range former {
		if _, err := conn.Exec(qctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "+
			"WHERE slot_name = $1 AND NOT active", slot); err != nil {
			a.log.Info("Could not drop the slot of a former member", "slot", slot, "error", err.Error())
			continue
		}
		a.log.Info("Dropped the slot of a former member", "slot", slot, "members", a.members.replicas.Load())
	}
}
