package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// The commit gate (docs/protocol.md, rule 2). In Async mode no follower's
// acknowledgement is needed for a commit, so a leader that froze and thawed
// after a failover would acknowledge commits until its agent noticed that
// its lease had run out: commits that are lost, since the new leader never
// had them. The operator names the agent's replication connection as the
// leader's one synchronous standby (names.CommitGate), so every commit
// waits for it; the gate acknowledges WAL only while the lease is valid (the
// same deadline as the watchdog's), and stops at the deadline, before the
// operator may consider the lease expired.
//
// The gate acknowledges the validity of the lease, not the durability of
// the WAL: it keeps nothing, and acknowledges what PostgreSQL sent it.

// gateState is what /status says about the gate.
type gateState string

const (
	gateOff  gateState = ""
	gateOpen gateState = "open" // connected, acknowledging
	gateHeld gateState = "held" // connected, acknowledging nothing: no valid lease
)

// gateStatusPeriod is how often an idle gate confirms its position, well
// inside wal_sender_timeout.
const gateStatusPeriod = time.Second

// gateWanted says whether this agent's PostgreSQL waits for the gate: the
// agent leads, and the synchronous standbys the operator set name it.
func (a *Agent) gateWanted() (epoch int64, ok bool) {
	a.ls.mu.Lock()
	defer a.ls.mu.Unlock()
	if a.ls.mode != api.ModeLeader || a.ls.lease == nil {
		return 0, false
	}
	return a.ls.epoch, leadership.Of(a.ls.lease).Standbys.Kind == leadership.CommitGate
}

// runGate keeps the gate connected while it is wanted, until ctx ends.
func (a *Agent) runGate(ctx context.Context) {
	var lastErr string
	for ctx.Err() == nil {
		epoch, wanted := a.gateWanted()
		if !wanted {
			a.ls.setGate(gateOff)
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		err := a.streamGate(ctx, epoch)
		a.ls.setGate(gateOff)
		// PostgreSQL not (yet) running, a promotion ending the stream of
		// the old timeline, a leadership change: connect again at once
		// if still wanted. Commits wait meanwhile.
		if err != nil && err.Error() != lastErr {
			a.log.Info("Commit gate disconnected", "epoch", epoch, "error", err.Error())
		}
		lastErr = fmt.Sprint(err)
		sleep(ctx, 50*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// streamGate streams the local PostgreSQL's WAL as a physical replication client
// named names.CommitGate and acknowledges it while the lease is valid. It
// returns when the stream ends or the agent no longer leads epoch.
func (a *Agent) streamGate(ctx context.Context, epoch int64) error {
	pw, err := a.password("replication-password")
	if err != nil {
		return err
	}
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Password = a.cfg.RunDir, uint16(names.PortPostgres), names.ReplicationUser, pw
	cfg.ConnectTimeout = 2 * time.Second
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = names.CommitGate
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	sys, err := pglogrepl.IdentifySystem(cctx, conn)
	if err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	// A temporary slot, named after the session so that a connection not
	// yet gone cannot collide: pglogrepl's physical START_REPLICATION
	// names one, and it vanishes with the session.
	slot := fmt.Sprintf("%s_%d", names.CommitGate, conn.PID())
	if _, err := pglogrepl.CreateReplicationSlot(cctx, conn, slot, "",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.PhysicalReplication}); err != nil {
		return fmt.Errorf("create the gate's temporary slot: %w", err)
	}
	if err := pglogrepl.StartReplication(cctx, conn, slot, sys.XLogPos,
		pglogrepl.StartReplicationOptions{Timeline: sys.Timeline, Mode: pglogrepl.PhysicalReplication}); err != nil {
		return fmt.Errorf("START_REPLICATION: %w", err)
	}
	cancel()
	a.log.Info("Commit gate connected", "epoch", epoch, "timeline", sys.Timeline, "from", sys.XLogPos.String())

	// Commits that waited while the gate was away are before XLogPos:
	// acknowledging it (with a valid lease) lets them go.
	pos := sys.XLogPos
	acked := pglogrepl.LSN(0)
	ack := func(force bool) error {
		if !a.ls.mayAck(epoch, a.clock.Now()) {
			a.ls.setGate(gateHeld)
			return nil
		}
		a.ls.setGate(gateOpen)
		if pos == acked && !force {
			return nil
		}
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos,
		}); err != nil {
			return fmt.Errorf("acknowledge: %w", err)
		}
		acked = pos
		return nil
	}
	if err := ack(true); err != nil {
		return err
	}
	for {
		if _, wanted := a.gateWanted(); !wanted || ctx.Err() != nil || !a.ls.stillEpoch(epoch) {
			return errors.New("no longer the leader of this epoch")
		}
		rctx, rcancel := context.WithTimeout(ctx, gateStatusPeriod)
		msg, err := conn.ReceiveMessage(rctx)
		rcancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				// Idle: confirm the position, so the walsender does not
				// time out while the lease is valid.
				if err := ack(true); err != nil {
					return err
				}
				continue
			}
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return err
				}
				pos = max(pos, x.WALStart+pglogrepl.LSN(len(x.WALData)))
				if err := ack(false); err != nil {
					return err
				}
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return err
				}
				pos = max(pos, k.ServerWALEnd)
				if err := ack(k.ReplyRequested); err != nil {
					return err
				}
			}
		case *pgproto3.CopyDone:
			// The timeline ended (a promotion): connect again on the new one.
			return errors.New("the stream of this timeline ended")
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		}
	}
}
