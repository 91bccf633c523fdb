package agent

// The lease keeper: while the agent leads, it renews the Lease every second
// apart from the pass and refreshes the watchdog; fencing and releasing are
// here too, the two ways a leader gives up its right to acknowledge.

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// keepLease renews the Lease and refreshes the watchdog every second while
// the agent leads, apart from the pass: a long operation in a pass (a
// promotion on a busy machine) must not starve the renewals, or the
// watchdog would stop PostgreSQL in the middle of it.
func (a *Agent) keepLease(ctx context.Context) {
	everySecond(ctx, a.renewOnce)
}

// renewOnce is one of keepLease's renewals.
func (a *Agent) renewOnce(ctx context.Context) {
	a.ls.mu.Lock()
	lead, lease, epoch := a.ls.mode == api.ModeLeader, a.ls.lease, a.ls.epoch
	a.ls.mu.Unlock()
	if !lead || lease == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := a.clock.Now()
	if err := a.renew(rctx, lease, start); err != nil {
		// The pass may have read a newer Lease: renew that one if it
		// is still ours at the same epoch.
		fresh, gerr := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(rctx, a.leaseName(), metav1.GetOptions{})
		if s := leadership.Of(fresh); gerr == nil && s.Holder == a.cfg.Pod && s.Epoch == epoch && !s.Sealed() {
			_ = a.renew(rctx, fresh, start)
		}
	}
	a.ls.mu.Lock()
	deadline := a.ls.deadline
	a.ls.mu.Unlock()
	if a.clock.Now().Before(deadline) {
		// Fails harmlessly when no leader runs (yet).
		_ = a.instance.SetDeadline(rctx, deadline)
	}
}

// renew renews the Lease with optimistic concurrency: a Lease moved or
// sealed in between makes the update fail, and the agent looks again.
func (a *Agent) renew(ctx context.Context, lease *coordinationv1.Lease, start time.Time) error {
	// Only the holder renews, and never a sealed or revoked epoch: such an
	// epoch stays fenced even if its leader could still renew.
	s := leadership.Of(lease)
	if s.Holder != a.cfg.Pod || s.Epoch == 0 || s.Ending() {
		return errors.New("not renewing: the Lease is not ours at an unsealed, unrevoked epoch")
	}
	l := lease.DeepCopy()
	now := metav1.NewMicroTime(start)
	l.Spec.RenewTime = &now
	// The position travels with the renewal: the operator's Async bound
	// (maxLagBytes) then holds whatever the operator remembers.
	a.ls.mu.Lock()
	position, id := a.ls.pgStatus.WriteLSN, a.ls.pgStatus.SystemIdentifier
	a.ls.mu.Unlock()
	leadership.SetLeaderPosition(l, leadership.Of(lease).Epoch, position)
	if position != 0 {
		// A leader that serves records the cluster's identity, once.
		leadership.RecordSystemIdentifier(l, id)
	}
	leadership.SetFailsafeReplicas(l, failsafeReplicas(s, a.members.replicas.Load()))
	if l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &now
	}
	updated, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsConflict(err) {
			return errors.New("the Lease changed under the renewal; looking again")
		}
		return err
	}
	a.ls.mu.Lock()
	a.ls.storeLease(updated)
	if d := start.Add(renewDeadline(updated)); d.After(a.ls.deadline) {
		a.ls.deadline, a.ls.failsafe = d, false
	}
	a.ls.lastRenew = start
	a.ls.mu.Unlock()
	return nil
}

// failsafeReplicas is the member count a renewal publishes for the
// failsafe: none when the operator turned it off; else the StatefulSet's
// replicas, or, while they are unknown, what was published before.
func failsafeReplicas(s leadership.State, replicas int32) int32 {
	switch {
	case !s.Failsafe:
		return 0
	case replicas <= 0:
		return s.FailsafeReplicas
	}
	return replicas
}

// renewDeadline is how long after a renewal's start the leader may write:
// two thirds of the lease, so that it has stopped before anyone may
// consider the Lease expired.
func renewDeadline(lease *coordinationv1.Lease) time.Duration {
	d := 10 * time.Second
	if lease.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	return d * 2 / 3
}

// fence makes sure the local PostgreSQL acknowledges nothing more.
func (a *Agent) fence(ctx context.Context, why string) {
	a.ls.mu.Lock()
	already := a.ls.fenced
	a.ls.fenced = true
	a.ls.reason = why
	a.ls.mu.Unlock()
	a.relays.closeAll()
	if !already {
		a.log.Info("Fencing: stopping PostgreSQL at once", "reason", why)
	}
	if _, err := a.instance.Stop(ctx, instance.StopImmediate); err != nil {
		a.log.Error(err, "Fence")
	}
}

// release gives up the Lease. Callers guarantee that PostgreSQL is stopped:
// a release promises that nothing more is acknowledged under this epoch.
func (a *Agent) release(ctx context.Context, final lsn.LSN, why string) error {
	a.ls.mu.Lock()
	lease, epoch := a.ls.lease, a.ls.epoch
	a.ls.mu.Unlock()
	if lease == nil || ptrString(lease.Spec.HolderIdentity) != a.cfg.Pod {
		return nil
	}
	// A renewal may have moved the Lease's version since it was read: read
	// it again and release it if it is still ours at the same epoch.
	var updated *coordinationv1.Lease
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l := lease.DeepCopy()
		if updated != nil || l == nil {
			fresh, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(ctx, a.leaseName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			l = fresh
		}
		if ptrString(l.Spec.HolderIdentity) != a.cfg.Pod || l.Spec.LeaseTransitions == nil || int64(*l.Spec.LeaseTransitions) != epoch {
			updated = l
			return nil // no longer ours: nothing to release
		}
		s := leadership.Of(l)
		s.Holder, s.ReleasedLSN, s.ReleasedBy = "", final, a.cfg.Pod
		leadership.Encode(s, l)
		u, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Update(ctx, l, metav1.UpdateOptions{})
		if err != nil {
			updated = l // read again on the next try
			return err
		}
		updated = u
		return nil
	})
	if err != nil {
		return fmt.Errorf("release the Lease: %w", err)
	}
	a.ls.mu.Lock()
	a.ls.storeLease(updated)
	a.ls.deadline, a.ls.failsafe = time.Time{}, false
	a.ls.mu.Unlock()
	a.relays.closeAll()
	a.log.Info("Released the Lease", "reason", why, "lsn", final.String())
	return nil
}

// shutdown stops PostgreSQL cleanly when the pod goes, and, on a leader,
// releases the Lease afterwards with the final LSN: a promise that no
// further write will be acknowledged under this epoch.
func (a *Agent) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.ls.mu.Lock()
	leading, lease := a.ls.mode == api.ModeLeader, a.ls.lease
	a.ls.mu.Unlock()
	a.relays.closeAll()
	if !leading || lease == nil {
		return
	}
	lsn, err := a.instance.Stop(ctx, instance.StopFast)
	if err != nil {
		// The postgres container may have stopped first (it stops
		// PostgreSQL on SIGTERM too). Release only when PostgreSQL is
		// known stopped: instance says so, or instance itself is gone (a
		// container's processes go with its main process).
		st, serr := a.instance.Status(ctx)
		if serr == nil && st.Running {
			a.log.Error(err, "Stop PostgreSQL before releasing the Lease; keeping the Lease")
			return
		}
		lsn = 0
	}
	if err := a.release(ctx, lsn, "the pod is shutting down"); err != nil {
		a.log.Error(err, "Release the Lease")
	}
}
