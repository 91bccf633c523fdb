package agent

// The pass: one observe-decide-act round, the only place where the agent
// decides (plan.go) and acts on its PostgreSQL. It runs every second and
// at once when the Lease, the pod or PostgreSQL changes (watch.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

var errInstanceDown = errors.New("waiting for instance (the postgres container) to answer")

// leaderStartTimeout bounds how long a leader's PostgreSQL may run without
// accepting connections (a long crash recovery, a hung disk) before the
// agent gives the Lease up for a follower to lead: a failover takes about
// a lease and a promotion; waiting longer keeps writes down for longer,
// though it keeps an Async leader's unreplicated tail (docs/failover.md).
const leaderStartTimeout = 30 * time.Second

// pass is one observe-decide-act round.
func (a *Agent) pass(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a.ls.mu.Lock()
	a.ls.passBusy = true
	a.ls.mu.Unlock()
	defer func() {
		a.ls.mu.Lock()
		a.ls.passBusy = false
		a.ls.mu.Unlock()
	}()
	start := a.clock.Now()
	// The API server may not answer at all (stopped, cut off): the rest
	// of the pass must still see PostgreSQL.
	octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
	lease, pod, err := a.observe(octx)
	ocancel()
	if err == nil {
		a.ls.mu.Lock()
		a.ls.lastContact, a.ls.pod = start, pod
		a.ls.storeLease(lease)
		a.ls.mu.Unlock()
	} else {
		a.log.V(1).Info("Cannot reach the API server", "error", err.Error())
	}
	st, stErr := a.instance.Status(ctx)
	a.ls.mu.Lock()
	a.ls.pgStatus, a.ls.instanceDown = st, stErr != nil
	if stErr == nil && st.Streaming {
		a.ls.streamedAt = start
	}
	switch {
	case stErr == nil && (!st.Running || st.Accepting):
		a.ls.silentSince = time.Time{}
	case a.ls.silentSince.IsZero():
		a.ls.silentSince = start
	}
	lease, pod = a.ls.lease, a.ls.pod
	a.ls.mu.Unlock()
	if lease == nil || pod == nil {
		a.ls.setReason("waiting for the Lease and the pod to be readable")
		return
	}
	epoch := int64(0)
	if lease.Spec.LeaseTransitions != nil {
		epoch = int64(*lease.Spec.LeaseTransitions)
	}
	lead := a.leaderIntent(lease, pod, epoch)
	a.ls.mu.Lock()
	refusal := a.ls.history.observe(leadership.Of(lease))
	a.ls.mu.Unlock()
	if refusal != "" {
		if lead {
			a.log.Info("Refusing to lead", "reason", refusal)
		}
		lead = false
	}
	a.ls.mu.Lock()
	changed := a.ls.epoch != epoch || (a.ls.mode == api.ModeLeader) != lead
	oldMode, oldEpoch := a.ls.mode, a.ls.epoch
	a.ls.epoch = epoch
	if lead {
		a.ls.mode = api.ModeLeader
	} else {
		a.ls.mode = api.ModeFollower
	}
	a.ls.mu.Unlock()
	if changed {
		a.log.Info("Leadership changed", "from", oldMode, "fromEpoch", oldEpoch, "to", a.ls.mode, "epoch", epoch,
			"holder", ptrString(lease.Spec.HolderIdentity))
		// Every relay of the old epoch goes, on both ends.
		a.relays.closeAll()
	}
	if !lead && leadership.Of(lease).Sealed() {
		a.seal(ctx, epoch)
	}
	var actErr error
	if lead {
		actErr = a.lead(ctx, lease, epoch, st, start, err == nil)
	} else {
		actErr = a.follow(ctx, lease, epoch, st)
	}
	if actErr != nil {
		a.ls.setReason(actErr.Error())
		a.log.Info("Pass failed", "mode", a.ls.mode, "error", actErr.Error())
	}
	a.backupIfAsked(ctx, pod, st)
	if refusal != "" {
		// Reported in /status, which the operator's conditions quote.
		a.ls.setReason(refusal)
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
// labelled leader at the Lease's epoch, and the epoch is neither sealed nor
// revoked (a revoked epoch ends: nobody renews it).
func (a *Agent) leaderIntent(lease *coordinationv1.Lease, pod *corev1.Pod, epoch int64) bool {
	return ptrString(lease.Spec.HolderIdentity) == a.cfg.Pod &&
		pod.Labels[names.LabelRole] == names.RoleLeader &&
		pod.Labels[names.LabelEpoch] == strconv.FormatInt(epoch, 10) &&
		!leadership.Of(lease).Ending()
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
	a.ls.mu.Lock()
	done := a.ls.sealedEpoch == epoch
	a.ls.mu.Unlock()
	if done {
		return
	}
	deadline := a.clock.Now().Add(2 * time.Second)
	for {
		st, err := a.instance.Status(ctx)
		if err != nil || !st.Running || !st.InRecovery {
			return // no follower's PostgreSQL to seal
		}
		if st.WaitingForWAL && !st.Streaming && st.ReplayedLSN != 0 {
			at := max(st.ReplayedLSN, st.ReceivedLSN)
			a.ls.mu.Lock()
			a.ls.sealedEpoch, a.ls.sealedLSN = epoch, at
			a.ls.mu.Unlock()
			a.log.Info("Sealed: no more WAL of this epoch", "epoch", epoch, "lsn", at.String())
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

// lead renews the Lease, then brings PostgreSQL to leading with the new
// deadline. Every write permission flows from a renewal that succeeded.
func (a *Agent) lead(ctx context.Context, lease *coordinationv1.Lease, epoch int64, st instance.Status,
	passStart time.Time, reached bool) error {
	// keepLease renews every second; a pass renews too (a new leader's
	// first renewal must not wait), but not within half a second of the
	// last one: every renewal wakes every agent's pass.
	a.ls.mu.Lock()
	recent := a.clock.Since(a.ls.lastRenew) < 500*time.Millisecond
	a.ls.mu.Unlock()
	if reached && !recent {
		if err := a.renew(ctx, lease, passStart); err != nil {
			a.log.Info("Lease renewal failed", "error", err.Error())
		}
	}
	a.ls.mu.Lock()
	deadline, wasFenced, silentSince, instanceDown := a.ls.deadline, a.ls.fenced, a.ls.silentSince, a.ls.instanceDown
	a.ls.mu.Unlock()
	s := plan(observed{Lead: true, Self: a.cfg.Pod, Holder: a.cfg.Pod, Epoch: epoch, PG: st,
		FirstEpoch: leadership.Of(lease).FirstEpoch, Restore: a.cfg.Recovery != nil,
		DeadlinePassed: !a.clock.Now().Before(deadline), HandOverTo: handoverTo(lease, a.cfg.Pod),
		WasFenced: wasFenced, LedThisEpoch: a.ls.ledEpochIs(epoch),
		StartTimedOut: !silentSince.IsZero() && a.clock.Since(silentSince) > leaderStartTimeout && a.members.replicas.Load() > 1,
		InstanceDown:  instanceDown})
	switch s {
	case stepFence:
		// No renewal within the renew deadline (the watchdog fences too,
		// at the same moment).
		a.fence(ctx, "the Lease could not be renewed before its renew deadline")
		return errors.New("leader without a valid lease: fenced, waiting to renew")
	case stepAwaitRenewal:
		return errors.New("leader without a valid lease: fenced, waiting to renew")
	case stepAwaitInstance:
		return errInstanceDown
	}
	// A leader this agent fenced itself (no renewal in time) may serve
	// again once it renews its still-held Lease; one whose PostgreSQL died
	// on its own releases the Lease instead.
	a.ls.mu.Lock()
	a.ls.fenced = false
	a.ls.mu.Unlock()
	// The synchronous standbys are in place before the first write can be
	// accepted: at start, and before a promotion (a follower ignores the
	// setting until it leads). A value the codec cannot read (never the
	// operator's) changes nothing: the leader keeps what it runs.
	syncNames := st.SynchronousStandbyNames
	if sb := leadership.Of(lease).Standbys; sb.Kind != leadership.Unreadable {
		syncNames = sb.String()
	}
	leaderStart := instance.StartOptions{Role: instance.RoleLeader, Deadline: deadline, SynchronousStandbyNames: syncNames, Epoch: epoch,
		SystemIdentifier: leadership.Of(lease).SystemIdentifier}
	switch s {
	case stepRefuseInitdb:
		return errors.New("leader with an empty data directory past the first epoch: refusing to initdb over a cluster that has data elsewhere")
	case stepInitdb, stepRestore:
		if s == stepRestore {
			req := *a.cfg.Recovery
			req.Epoch = epoch
			a.log.Info("Bootstrapping the first leader: restoring a backup", "backup", req.BackupID, "target", req.Target)
			ictx, cancel := a.longOperation(24 * time.Hour)
			err := a.attempt(ictx, func() error { return a.instance.Restore(ictx, req) })
			cancel()
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
		} else {
			a.log.Info("Bootstrapping the first leader: initdb")
			ictx, cancel := a.longOperation(10 * time.Minute)
			err := a.instance.Initdb(ictx)
			cancel()
			if err != nil {
				return fmt.Errorf("initdb: %w", err)
			}
		}
		// initdb takes seconds on a busy machine: start with the deadline
		// of the renewals made meanwhile.
		leaderStart.Deadline = a.ls.currentDeadline()
		if err := a.start(ctx, leaderStart); err != nil {
			return fmt.Errorf("start leader: %w", err)
		}
		a.ls.setLedEpoch(epoch)
		return a.ensureRoles(ctx)
	case stepHandOver:
		return a.handOver(ctx, handoverTo(lease, a.cfg.Pod), epoch)
	case stepRelease:
		if instanceDown {
			return a.release(ctx, 0, fmt.Sprintf("instance (the postgres container) is gone or has not answered in %s", leaderStartTimeout))
		}
		return a.release(ctx, 0, "PostgreSQL exited under the leader ("+st.LastExit+")")
	case stepAbandonStart:
		why := fmt.Sprintf("PostgreSQL started as the leader has not accepted connections in %s", leaderStartTimeout)
		a.log.Info("Stopping PostgreSQL and releasing the Lease", "reason", why)
		a.ls.mu.Lock()
		a.ls.startFailure = why
		a.ls.mu.Unlock()
		if _, err := a.instance.Stop(ctx, instance.StopImmediate); err != nil {
			return fmt.Errorf("stop PostgreSQL that does not answer: %w", err)
		}
		return a.release(ctx, 0, why)
	case stepStartLeader:
		a.log.Info("Starting PostgreSQL as leader", "epoch", epoch)
		if err := a.start(ctx, leaderStart); err != nil {
			// A leader that cannot serve must not hold the Lease while
			// followers could: release it (position unknown: the operator
			// seals and elects as for a lost leader). Alone, it keeps it
			// and tries again, spaced out: nobody else could lead.
			if a.members.replicas.Load() > 1 {
				a.log.Info("PostgreSQL does not start under the leader: releasing the Lease", "error", err.Error())
				if rerr := a.release(ctx, 0, "PostgreSQL does not start: "+err.Error()); rerr != nil {
					return errors.Join(err, rerr)
				}
				return fmt.Errorf("released the Lease: PostgreSQL does not start: %w", err)
			}
			return err
		}
		a.ls.setLedEpoch(epoch)
		return nil
	case stepPromote:
		start := a.clock.Now()
		// The synchronous standbys are in force before pg_promote (one
		// reload with the promotion's own changes).
		a.log.Info("Promoting", "epoch", epoch)
		if err := a.instance.Promote(ctx, a.ls.currentDeadline(), epoch, syncNames); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
		a.ls.setLedEpoch(epoch)
		a.log.Info("Promoted", "epoch", epoch, "took", a.clock.Since(start).Round(time.Millisecond).String())
		// The next pass sees PostgreSQL out of recovery and makes sure of
		// the roles: until then /readyz holds its answer, so it comes at once.
		a.poke()
		return nil
	}
	return a.serve(ctx, st, deadline, epoch, syncNames)
}

// handOver is a switchover's leader side (docs/failover.md): stop cleanly,
// so that every follower streaming receives the last WAL, then release with
// the final position; the operator promotes the target once it holds it.
func (a *Agent) handOver(ctx context.Context, target string, epoch int64) error {
	// The relays stay open while PostgreSQL stops: its walsenders ship
	// the last WAL to the followers before it exits.
	a.log.Info("Handing over: stopping PostgreSQL cleanly", "to", target, "epoch", epoch)
	// A checkpoint while still serving makes the shutdown checkpoint,
	// during which nothing is served, short.
	if conn, err := a.localConn(ctx); err == nil {
		_, _ = conn.Exec(ctx, "CHECKPOINT")
		_ = conn.Close(ctx)
	}
	final, err := a.instance.Stop(ctx, instance.StopFast)
	if err != nil {
		return fmt.Errorf("stop for the handover to %s: %w", target, err)
	}
	return a.release(ctx, final, "switchover to "+target)
}

// serve keeps a serving leader's watchdog fresh and its synchronous
// standbys as the operator set them.
func (a *Agent) serve(ctx context.Context, st instance.Status, deadline time.Time, epoch int64, syncNames string) error {
	if err := a.instance.SetDeadline(ctx, deadline); err != nil {
		return fmt.Errorf("refresh the watchdog: %w", err)
	}
	a.ls.setLedEpoch(epoch)
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
	a.ls.setReason("")
	return nil
}

// handoverTo is the pod the operator asked this leader to hand over to
// through the Lease, or "".
func handoverTo(lease *coordinationv1.Lease, self string) string {
	if t := leadership.Of(lease).SwitchoverTo; t != self {
		return t
	}
	return ""
}

// follow keeps PostgreSQL following the Lease holder.
func (a *Agent) follow(ctx context.Context, lease *coordinationv1.Lease, epoch int64, st instance.Status) error {
	holder := ptrString(lease.Spec.HolderIdentity)
	a.ls.mu.Lock()
	instanceDown := a.ls.instanceDown
	a.ls.mu.Unlock()
	switch plan(observed{Self: a.cfg.Pod, Holder: holder, Epoch: epoch, PG: st, InstanceDown: instanceDown}) {
	case stepAwaitInstance:
		return errInstanceDown
	case stepDemote:
		// A leader that is no longer one: stop it at once, then rejoin.
		a.fence(ctx, "this pod no longer leads")
		return nil
	case stepAwaitLeader:
		return errors.New("no leader to follow")
	case stepClone:
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
	case stepRewind:
		return a.rewind(ctx, holder, st)
	case stepStartFollower:
		return a.startFollower(ctx)
	}
	if st.MissingWAL != "" && !st.Streaming {
		return a.recloneIfWALGone(ctx, holder, st.MissingWAL)
	}
	a.ls.setReason("")
	return nil
}

// rewind takes data that was last a leader's, which may hold writes the
// new leader never had, back to the fork with pg_rewind (which does
// nothing when nothing diverged).
func (a *Agent) rewind(ctx context.Context, holder string, st instance.Status) error {
	conninfo, err := a.relayConninfo("postgres", "superuser-password")
	if err != nil {
		return err
	}
	if err := a.leaderCheckpointed(ctx); err != nil {
		return err
	}
	a.log.Info("Rewinding a former leader's data to the leader", "leader", holder, "state", st.ClusterState)
	start := a.clock.Now()
	rctx, cancel := a.longOperation(2 * time.Hour)
	err = a.instance.Rewind(rctx, conninfo)
	cancel()
	if err != nil {
		a.reclones.rewindFailures++
		if a.reclones.rewindFailures >= rewindAttempts {
			return a.reclone(ctx, holder, fmt.Sprintf("pg_rewind failed %d times in a row: %v", a.reclones.rewindFailures, err))
		}
		return fmt.Errorf("rewind to %s (attempt %d of %d before a new clone): %w", holder, a.reclones.rewindFailures, rewindAttempts, err)
	}
	a.reclones.rewindFailures = 0
	a.log.Info("Rewound", "leader", holder, "took", a.clock.Since(start).Round(time.Millisecond).String())
	return a.startFollower(ctx)
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
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.Password = a.cfg.RunDir, uint16(a.cfg.RelayPort), "postgres", "postgres", pw //nolint:gosec // G115: a port, checked by flag parsing
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
	opts := instance.StartOptions{Role: instance.RoleFollower, PrimaryConninfo: replication, PrimarySlotName: names.Slot(a.cfg.Pod)}
	a.ls.mu.Lock()
	if a.ls.lease != nil {
		opts.SystemIdentifier = leadership.Of(a.ls.lease).SystemIdentifier
	}
	a.ls.mu.Unlock()
	return a.start(ctx, opts)
}

// relayConninfo connects, through the local relay socket, to the leader.
func (a *Agent) relayConninfo(user, passwordFile string) (string, error) {
	pw, err := a.password(passwordFile)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s",
		a.cfg.RunDir, a.cfg.RelayPort, user, conninfoQuote(pw), names.Slot(a.cfg.Pod)), nil
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
