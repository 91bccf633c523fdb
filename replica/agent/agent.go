// Package agent is `regent agent`, the sidecar of every database pod and the
// only in-pod process that talks to Kubernetes (docs/architecture.md, docs/data-plane.md). It watches
// its own pod and its cluster's Lease, decides whether its PostgreSQL leads
// or follows, drives `regent instance` accordingly, renews the Lease while it
// leads (and fences itself when it cannot), relays replication between pods
// with an epoch check on both ends, and serves a read-only HTTP API.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// Config configures an agent.
type Config struct {
	Namespace, Cluster, Pod, PodIP string
	// RunDir holds instance's socket, PostgreSQL's and the relay's.
	RunDir string
	// SecretsDir holds superuser-password, replication-password and
	// app-password.
	SecretsDir string
	// AppDatabase and AppOwner are created with the first leader.
	AppDatabase, AppOwner string
	// RelayPort is the leader side's TCP port (5433); HTTPPort the API's.
	RelayPort, HTTPPort int
	Client              kubernetes.Interface
	Clock               clock.Clock
	Log                 logr.Logger
}

// Agent runs one pod's side of the protocol.
type Agent struct {
	cfg      Config
	clock    clock.Clock
	log      logr.Logger
	instance *instance.Client
	relays   *relaySet
	// wake asks the run loop for a pass now (see watch.go).
	wake chan struct{}
	// runCtx ends when the agent stops: long operations (initdb, base
	// backup, rewind) run under it, not under a pass's short timeout.
	runCtx context.Context

	mu sync.Mutex
	// What the agent last saw and decided.
	lease       *coordinationv1.Lease
	pod         *corev1.Pod
	mode        api.Mode
	epoch       int64
	deadline    time.Time // a leader's: writes stop at it
	lastRenew   time.Time
	lastContact time.Time
	// passBusy: a pass is running (maybe a long step: a base backup, a
	// rewind), so keepContact reads the Lease in its place.
	passBusy bool
	fenced   bool
	reason   string
	// sealedEpoch and sealedLSN: the epoch this follower sealed, and the
	// last position it received under it.
	sealedEpoch int64
	sealedLSN   string
	// rolesDone: this agent made sure, as leader, that the replication and
	// application roles and database exist.
	rolesDone bool
	pgStatus  instance.Status
	// gate is the commit gate's state (gate.go).
	gate gateState
	// ledEpoch is the epoch in which this agent last ran PostgreSQL as
	// the leader: a PostgreSQL that died then releases the Lease; one that
	// died in an earlier epoch (a leader elected again) is started.
	ledEpoch int64
}

func (a *Agent) ledEpochIs(epoch int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ledEpoch == epoch
}

func (a *Agent) setLedEpoch(epoch int64) {
	a.mu.Lock()
	a.ledEpoch = epoch
	a.mu.Unlock()
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	c := cfg.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	return &Agent{cfg: cfg, clock: c, log: cfg.Log, instance: instance.NewClient(cfg.RunDir),
		relays: newRelaySet(), mode: api.ModeFollower, wake: make(chan struct{}, 1)}
}

func (a *Agent) leaseName() string { return names.Lease(a.cfg.Cluster) }

// longOperation is the context for a step that may take far longer than a
// pass (initdb, a base backup, a rewind): cancelling one half-way leaves
// work to redo, so it ends only with the agent or after limit.
func (a *Agent) longOperation(limit time.Duration) (context.Context, context.CancelFunc) {
	parent := a.runCtx
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, limit)
}

// currentDeadline is the leader's write deadline from the latest renewal:
// keepLease renews during a long step, so a deadline read before it is
// stale by the time PostgreSQL starts.
func (a *Agent) currentDeadline() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deadline
}

// Run drives the pod until ctx ends: a pass every second (more often while
// something is changing), each observing the Lease and the pod through the
// API server, deciding, and acting.
func (a *Agent) Run(ctx context.Context) error {
	a.runCtx = ctx
	errs := make(chan error, 4)
	go a.keepLease(ctx)
	go a.keepContact(ctx)
	go a.runGate(ctx)
	a.watchObjects(ctx)
	go a.watchInstance(ctx)
	go func() { errs <- a.serveRelay(ctx) }()
	go func() { errs <- a.serveLocalAPI(ctx) }()
	go func() { errs <- a.serveFollowerRelay(ctx) }()
	go func() { errs <- a.serveHTTP(ctx) }()
	// The pass period is not safety-critical (deadlines are), so a plain
	// ticker does.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		a.pass(ctx)
		select {
		case <-ctx.Done():
			a.shutdown()
			return nil
		case err := <-errs:
			if err != nil {
				return err
			}
		case <-t.C:
		case <-a.wake:
		}
	}
}

// pass is one observe-decide-act round.
func (a *Agent) pass(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a.mu.Lock()
	a.passBusy = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.passBusy = false
		a.mu.Unlock()
	}()
	start := a.clock.Now()
	lease, pod, err := a.observe(ctx)
	if err == nil {
		a.mu.Lock()
		a.lastContact, a.lease, a.pod = start, lease, pod
		a.mu.Unlock()
	} else {
		a.log.V(1).Info("Cannot reach the API server", "error", err.Error())
	}
	st, _ := a.instance.Status(ctx)
	a.mu.Lock()
	a.pgStatus = st
	lease, pod = a.lease, a.pod
	a.mu.Unlock()
	if lease == nil || pod == nil {
		a.setReason("waiting for the Lease and the pod to be readable")
		return
	}
	epoch := int64(0)
	if lease.Spec.LeaseTransitions != nil {
		epoch = int64(*lease.Spec.LeaseTransitions)
	}
	lead := a.leaderIntent(lease, pod, epoch)
	a.mu.Lock()
	changed := a.epoch != epoch || (a.mode == api.ModeLeader) != lead
	oldMode, oldEpoch := a.mode, a.epoch
	a.epoch = epoch
	if lead {
		a.mode = api.ModeLeader
	} else {
		a.mode = api.ModeFollower
	}
	a.mu.Unlock()
	if changed {
		a.log.Info("Leadership changed", "from", oldMode, "fromEpoch", oldEpoch, "to", a.mode, "epoch", epoch,
			"holder", ptrString(lease.Spec.HolderIdentity))
		// Every relay of the old epoch goes, on both ends.
		a.relays.closeAll()
	}
	if !lead && sealedEpoch(lease) >= epoch {
		a.seal(ctx, epoch)
	}
	var actErr error
	if lead {
		actErr = a.lead(ctx, lease, epoch, st, start, err == nil)
	} else {
		actErr = a.follow(ctx, lease, epoch, st)
	}
	if actErr != nil {
		a.setReason(actErr.Error())
		a.log.Info("Pass failed", "mode", a.mode, "error", actErr.Error())
	}
}

// observe reads the Lease and the agent's own pod (RBAC lets the agent read
// exactly these, by name).
func (a *Agent) observe(ctx context.Context) (*coordinationv1.Lease, *corev1.Pod, error) {
	lease, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(ctx, a.leaseName(), metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("read Lease: %w", err)
	}
	pod, err := a.cfg.Client.CoreV1().Pods(a.cfg.Namespace).Get(ctx, a.cfg.Pod, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("read own pod: %w", err)
	}
	return lease, pod, nil
}

// leaderIntent: leader only when the agent's pod holds the Lease and is
// labelled leader at the Lease's epoch, and the epoch is not sealed.
func (a *Agent) leaderIntent(lease *coordinationv1.Lease, pod *corev1.Pod, epoch int64) bool {
	return ptrString(lease.Spec.HolderIdentity) == a.cfg.Pod &&
		pod.Labels[names.LabelRole] == names.RoleLeader &&
		pod.Labels[names.LabelEpoch] == strconv.FormatInt(epoch, 10) &&
		sealedEpoch(lease) < epoch
}

// sealedEpoch is the epoch the Lease says is sealed (0 when none; an
// unreadable seal seals everything).
func sealedEpoch(lease *coordinationv1.Lease) int64 {
	v, ok := lease.Annotations[names.AnnotationSealedEpoch]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 1 << 62
	}
	return n
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (a *Agent) setReason(r string) {
	a.mu.Lock()
	a.reason = r
	a.mu.Unlock()
}

// seal cuts the relays of a sealed epoch and records, once, the end of
// the WAL this follower holds: from then on it accepts no more WAL of that
// epoch, so its position can be compared with the others'.
//
// pg_last_wal_receive_lsn() cannot be trusted for that: when the WAL
// receiver restarts (and cutting the relay makes it restart) it goes back
// to the start of the segment. So the agent waits until the startup
// process has replayed everything on disk and waits for more, with no
// stream: the replay position is then the end of the WAL held, and every
// commit this follower acknowledged is before it. Until then it reports
// nothing sealed (a follower blocked in replay, by a query conflict say,
// is not counted rather than counted too low).
func (a *Agent) seal(ctx context.Context, epoch int64) {
	a.relays.closeAll()
	a.mu.Lock()
	done := a.sealedEpoch == epoch
	a.mu.Unlock()
	if done {
		return
	}
	deadline := a.clock.Now().Add(2 * time.Second)
	for {
		st, err := a.instance.Status(ctx)
		if err != nil || !st.Running || !st.InRecovery {
			return // no follower's PostgreSQL to seal
		}
		if st.WaitingForWAL && !st.Streaming && st.ReplayedLSN != "" {
			lsn := maxLSN(st.ReplayedLSN, st.ReceivedLSN)
			a.mu.Lock()
			a.sealedEpoch, a.sealedLSN = epoch, lsn
			a.mu.Unlock()
			a.log.Info("Sealed: no more WAL of this epoch", "epoch", epoch, "lsn", lsn)
			return
		}
		if !a.clock.Now().Before(deadline) || ctx.Err() != nil {
			a.log.Info("Sealing: waiting for replay to reach the end of the WAL held", "epoch", epoch,
				"replayed", st.ReplayedLSN, "waitingForWAL", st.WaitingForWAL, "streaming", st.Streaming)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// maxLSN returns the larger of two LSNs in PostgreSQL's X/Y notation.
func maxLSN(x, y string) string {
	px, errx := api.ParseLSN(x)
	py, erry := api.ParseLSN(y)
	switch {
	case errx != nil:
		return y
	case erry != nil || px >= py:
		return x
	}
	return y
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

// lead renews the Lease, then brings PostgreSQL to leading with the new
// deadline. Every write permission flows from a renewal that succeeded.
func (a *Agent) lead(ctx context.Context, lease *coordinationv1.Lease, epoch int64, st instance.Status,
	passStart time.Time, reached bool) error {
	// keepLease renews every second; a pass renews too (a new leader's
	// first renewal must not wait), but not within half a second of the
	// last one: every renewal wakes every agent's pass.
	a.mu.Lock()
	recent := a.clock.Since(a.lastRenew) < 500*time.Millisecond
	a.mu.Unlock()
	if reached && !recent {
		if err := a.renew(ctx, lease, passStart); err != nil {
			a.log.Info("Lease renewal failed", "error", err.Error())
		}
	}
	a.mu.Lock()
	deadline := a.deadline
	a.mu.Unlock()
	if !a.clock.Now().Before(deadline) {
		// No renewal within the renew deadline: fence (the watchdog does
		// it too, at the same moment).
		if st.Running && !st.InRecovery {
			a.fence(ctx, "the Lease could not be renewed before its renew deadline")
		}
		return errors.New("leader without a valid lease: fenced, waiting to renew")
	}
	// A leader this agent fenced itself (no renewal in time) may serve
	// again once it renews its still-held Lease; one whose PostgreSQL died
	// on its own releases the Lease instead.
	a.mu.Lock()
	wasFenced := a.fenced
	a.fenced = false
	a.mu.Unlock()
	// The synchronous standbys are in place before the first write can be
	// accepted: at start, and before a promotion (a follower ignores the
	// setting until it leads).
	syncNames := lease.Annotations[names.AnnotationSyncStandbys]
	leaderStart := instance.StartOptions{Role: instance.RoleLeader, Deadline: deadline, SynchronousStandbyNames: syncNames, Epoch: epoch}
	switch {
	case st.Data == string(instance.DataEmpty):
		if epoch != 1 {
			return errors.New("leader with an empty data directory past the first epoch: refusing to initdb over a cluster that has data elsewhere")
		}
		a.log.Info("Bootstrapping the first leader: initdb")
		ictx, cancel := a.longOperation(10 * time.Minute)
		err := a.instance.Initdb(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("initdb: %w", err)
		}
		// initdb takes seconds on a busy machine: start with the deadline
		// of the renewals made meanwhile.
		leaderStart.Deadline = a.currentDeadline()
		if err := a.instance.Start(ctx, leaderStart); err != nil {
			return fmt.Errorf("start leader: %w", err)
		}
		a.setLedEpoch(epoch)
		return a.ensureRoles(ctx)
	case st.Running && !st.InRecovery && handoverTo(lease, a.cfg.Pod) != "":
		// Switchover (docs/failover.md): stop cleanly, so that every follower
		// streaming receives the last WAL, then release with the final
		// position; the operator promotes the target once it holds it.
		target := handoverTo(lease, a.cfg.Pod)
		// The relays stay open while PostgreSQL stops: its walsenders ship
		// the last WAL to the followers before it exits.
		a.log.Info("Handing over: stopping PostgreSQL cleanly", "to", target, "epoch", epoch)
		// A checkpoint while still serving makes the shutdown checkpoint,
		// during which nothing is served, short.
		if conn, err := a.localConn(ctx); err == nil {
			_, _ = conn.Exec(ctx, "CHECKPOINT")
			_ = conn.Close(ctx)
		}
		lsn, err := a.instance.Stop(ctx, instance.StopFast)
		if err != nil {
			return fmt.Errorf("stop for the handover to %s: %w", target, err)
		}
		return a.release(ctx, lsn, "switchover to "+target)
	case !st.Running && st.Fenced == "" && !wasFenced && a.ledEpochIs(epoch):
		// (Also when instance itself restarted, its container killed:
		// this agent ran PostgreSQL as the leader of this epoch, and it
		// is gone.)
		// PostgreSQL died under a leader: release the Lease at once so
		// that the operator can fail over without waiting for it to
		// expire. Nothing can be acknowledged any more: no postmaster.
		return a.release(ctx, "", "PostgreSQL exited under the leader ("+st.LastExit+")")
	case !st.Running:
		a.log.Info("Starting PostgreSQL as leader", "epoch", epoch)
		if err := a.instance.Start(ctx, leaderStart); err != nil {
			return err
		}
		a.setLedEpoch(epoch)
		return nil
	case st.InRecovery:
		start := a.clock.Now()
		// The synchronous standbys are in force before pg_promote (one
		// reload with the promotion's own changes).
		a.log.Info("Promoting", "epoch", epoch)
		if err := a.instance.Promote(ctx, a.currentDeadline(), epoch, syncNames); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
		a.setLedEpoch(epoch)
		a.log.Info("Promoted", "epoch", epoch, "took", a.clock.Since(start).Round(time.Millisecond).String())
		return nil
	default:
		if err := a.instance.SetDeadline(ctx, deadline); err != nil {
			return fmt.Errorf("refresh the watchdog: %w", err)
		}
		a.setLedEpoch(epoch)
		// Roles and database of a bootstrap that failed half-way (they are
		// idempotent; done once per agent).
		if err := a.ensureRoles(ctx); err != nil {
			return err
		}
		// Commits wait for the standbys the operator names on the Lease.
		if syncNames != st.SynchronousStandbyNames {
			a.log.Info("Setting synchronous standbys", "from", st.SynchronousStandbyNames, "to", syncNames)
			if err := a.instance.Configure(ctx, syncNames); err != nil {
				return fmt.Errorf("synchronous standbys: %w", err)
			}
		}
		a.setReason("")
		return nil
	}
}

// handoverTo is the pod the operator asked this leader to hand over to
// through the Lease, or "".
func handoverTo(lease *coordinationv1.Lease, self string) string {
	if t := lease.Annotations[names.AnnotationSwitchoverTo]; t != self {
		return t
	}
	return ""
}

// keepLease renews the Lease and refreshes the watchdog every second while
// the agent leads, apart from the pass: a long operation in a pass (a
// promotion on a busy machine) must not starve the renewals, or the
// watchdog would stop PostgreSQL in the middle of it.
func (a *Agent) keepLease(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		lead, lease, epoch := a.mode == api.ModeLeader, a.lease, a.epoch
		a.mu.Unlock()
		if !lead || lease == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := a.clock.Now()
		if err := a.renew(rctx, lease, start); err != nil {
			// The pass may have read a newer Lease: renew that one if it
			// is still ours at the same epoch.
			fresh, gerr := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(rctx, a.leaseName(), metav1.GetOptions{})
			if gerr == nil && ptrString(fresh.Spec.HolderIdentity) == a.cfg.Pod && fresh.Spec.LeaseTransitions != nil &&
				int64(*fresh.Spec.LeaseTransitions) == epoch && sealedEpoch(fresh) < epoch {
				_ = a.renew(rctx, fresh, start)
			}
		}
		a.mu.Lock()
		deadline := a.deadline
		a.mu.Unlock()
		if a.clock.Now().Before(deadline) {
			// Fails harmlessly when no leader runs (yet).
			_ = a.instance.SetDeadline(rctx, deadline)
		}
		cancel()
	}
}

// keepContact reads the Lease while a pass is busy with a long step (a base
// backup or a rewind through the relay can take minutes): the relay
// forwards only while the agent has heard from the API server within the
// renew deadline and the Lease it last read still names the relay's epoch
// unsealed (mayFollow), and without this the long step's own connection
// would be cut mid-copy once the pass's last read grew old, leaving a
// half-rewound data directory. The pass alone decides and acts; this only
// keeps what the relay checks fresh, so that a Lease moved or sealed
// meanwhile cuts the copy, and a lost API server too.
func (a *Agent) keepContact(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		busy, last := a.passBusy, a.lastContact
		a.mu.Unlock()
		if !busy || a.clock.Since(last) < time.Second {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := a.clock.Now()
		lease, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(rctx, a.leaseName(), metav1.GetOptions{})
		cancel()
		if err != nil {
			continue
		}
		a.mu.Lock()
		if start.After(a.lastContact) {
			a.lastContact = start
			// A leader's renewals write a.lease themselves (newer than
			// this read, maybe); a follower's relay checks this one.
			if a.mode != api.ModeLeader {
				a.lease = lease
			}
		}
		a.mu.Unlock()
	}
}

// renew renews the Lease with optimistic concurrency: a Lease moved or
// sealed in between makes the update fail, and the agent looks again.
func (a *Agent) renew(ctx context.Context, lease *coordinationv1.Lease, start time.Time) error {
	// Only the holder renews, and never a sealed epoch: a sealed epoch
	// stays fenced even if its leader could still renew.
	if ptrString(lease.Spec.HolderIdentity) != a.cfg.Pod || lease.Spec.LeaseTransitions == nil ||
		sealedEpoch(lease) >= int64(*lease.Spec.LeaseTransitions) {
		return errors.New("not renewing: the Lease is not ours at an unsealed epoch")
	}
	l := lease.DeepCopy()
	now := metav1.NewMicroTime(start)
	l.Spec.RenewTime = &now
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
	a.mu.Lock()
	a.lease = updated
	a.deadline = start.Add(renewDeadline(updated))
	a.lastRenew = start
	a.mu.Unlock()
	return nil
}

// fence makes sure the local PostgreSQL acknowledges nothing more.
func (a *Agent) fence(ctx context.Context, why string) {
	a.mu.Lock()
	already := a.fenced
	a.fenced = true
	a.reason = why
	a.mu.Unlock()
	a.relays.closeAll()
	if !already {
		a.log.Info("Fencing: stopping PostgreSQL at once", "reason", why)
	}
	if _, err := a.instance.Stop(ctx, instance.StopImmediate); err != nil {
		a.log.Error(err, "Fence")
	}
}

// follow keeps PostgreSQL following the Lease holder.
func (a *Agent) follow(ctx context.Context, lease *coordinationv1.Lease, epoch int64, st instance.Status) error {
	if st.Running && !st.InRecovery {
		// A leader that is no longer one: stop it at once, then rejoin.
		a.fence(ctx, "this pod no longer leads")
		return nil
	}
	holder := ptrString(lease.Spec.HolderIdentity)
	if holder == "" || holder == a.cfg.Pod {
		return errors.New("no leader to follow")
	}
	conninfo, err := a.relayConninfo("postgres", "superuser-password")
	if err != nil {
		return err
	}
	switch {
	case st.Data == string(instance.DataEmpty):
		a.log.Info("Cloning the leader", "leader", holder, "epoch", epoch)
		replication, err := a.relayConninfo(names.ReplicationUser, "replication-password")
		if err != nil {
			return err
		}
		bctx, cancel := a.longOperation(24 * time.Hour)
		err = a.instance.BaseBackup(bctx, replication)
		cancel()
		if err != nil {
			return fmt.Errorf("base backup from %s: %w", holder, err)
		}
		return a.startFollower(ctx)
	case !st.Running && (st.ClusterState == "in production" || st.ClusterState == "shut down"):
		// The data was last a leader's: it may hold writes the new leader
		// never had. pg_rewind takes it back to the fork (and does nothing
		// when nothing diverged).
		if err := a.leaderCheckpointed(ctx); err != nil {
			return err
		}
		a.log.Info("Rewinding a former leader's data to the leader", "leader", holder, "state", st.ClusterState)
		start := a.clock.Now()
		rctx, cancel := a.longOperation(2 * time.Hour)
		err := a.instance.Rewind(rctx, conninfo)
		cancel()
		if err != nil {
			return fmt.Errorf("rewind to %s: %w; a fresh clone is needed (the data stays until a person removes it)", holder, err)
		}
		a.log.Info("Rewound", "leader", holder, "took", a.clock.Since(start).Round(time.Millisecond).String())
		return a.startFollower(ctx)
	case !st.Running:
		return a.startFollower(ctx)
	}
	a.setReason("")
	return nil
}

// leaderCheckpointed checks, through the relay, that the leader's pg_control
// already names its current timeline: pg_rewind reads the source's
// timeline there, and would find "no rewind required" against a leader
// that has not checkpointed since its promotion.
func (a *Agent) leaderCheckpointed(ctx context.Context) error {
	pw, err := a.password("superuser-password")
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.Password = a.cfg.RunDir, uint16(a.cfg.RelayPort), "postgres", "postgres", pw
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reach the leader: %w", err)
	}
	defer conn.Close(ctx)
	var checkpointed, current int64
	if err := conn.QueryRow(ctx, `SELECT (SELECT timeline_id FROM pg_control_checkpoint()),
		('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`).Scan(&checkpointed, &current); err != nil {
		return fmt.Errorf("read the leader's timeline: %w", err)
	}
	if checkpointed != current {
		return fmt.Errorf("waiting for the leader's first checkpoint on timeline %d before rewinding", current)
	}
	return nil
}

func (a *Agent) startFollower(ctx context.Context) error {
	replication, err := a.relayConninfo(names.ReplicationUser, "replication-password")
	if err != nil {
		return err
	}
	return a.instance.Start(ctx, instance.StartOptions{Role: instance.RoleFollower,
		PrimaryConninfo: replication, PrimarySlotName: slotName(a.cfg.Pod)})
}

// relayConninfo connects, through the local relay socket, to the leader.
func (a *Agent) relayConninfo(user, passwordFile string) (string, error) {
	pw, err := a.password(passwordFile)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s",
		a.cfg.RunDir, a.cfg.RelayPort, user, conninfoQuote(pw), slotName(a.cfg.Pod)), nil
}

func (a *Agent) password(file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.SecretsDir, file))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func conninfoQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

// slotName is the physical slot a follower streams from: the pod's name in
// the characters slot names allow.
func slotName(pod string) string { return strings.ReplaceAll(pod, "-", "_") }

// shutdown stops PostgreSQL cleanly when the pod goes, and, on a leader,
// releases the Lease afterwards with the final LSN: a promise that no
// further write will be acknowledged under this epoch.
func (a *Agent) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.mu.Lock()
	leading, lease := a.mode == api.ModeLeader, a.lease
	a.mu.Unlock()
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
		lsn = ""
	}
	if err := a.release(ctx, lsn, "the pod is shutting down"); err != nil {
		a.log.Error(err, "Release the Lease")
	}
}

// release gives up the Lease. Callers guarantee that PostgreSQL is stopped:
// a release promises that nothing more is acknowledged under this epoch.
func (a *Agent) release(ctx context.Context, lsn, why string) error {
	a.mu.Lock()
	lease, epoch := a.lease, a.epoch
	a.mu.Unlock()
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
		l.Spec.HolderIdentity = nil
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[names.AnnotationReleasedLSN] = lsn
		l.Annotations[names.AnnotationReleasedBy] = a.cfg.Pod
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
	a.mu.Lock()
	a.lease, a.deadline = updated, time.Time{}
	a.mu.Unlock()
	a.relays.closeAll()
	a.log.Info("Released the Lease", "reason", why, "lsn", lsn)
	return nil
}
