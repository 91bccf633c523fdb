package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/regent-dev/regent/internal/names"
)

// A member that cannot catch up is cloned again by itself (docs/data-plane.md,
// "Members that heal"): a follower whose leader no longer has the WAL it
// needs, in pg_wal or in its archive, or a deposed leader whose rewind
// keeps failing. Its data is removed first (instance.Reclone says why).

// rewindAttempts is how many rewinds in a row may fail before the member
// is cloned again instead: one failure may be the leader's restart or the
// network, three are not.
const rewindAttempts = 3

// recloneState is the pass's memory of failed rewinds; only the pass uses
// it.
type recloneState struct {
	rewindFailures int
}

// leaderArchiveHas asks the leader whether its archive holds the WAL file.
func (a *Agent) leaderArchiveHas(ctx context.Context, name string) (bool, error) {
	remote, br, _, err := a.dialLeader(ctx, walHandshakePrefix, "file="+name)
	if err != nil {
		return false, err
	}
	defer remote.Close()
	_ = remote.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer, err := br.ReadString('\n')
	answer = strings.TrimSpace(answer)
	switch {
	case err != nil:
		return false, fmt.Errorf("the leader did not answer: %w", err)
	case answer == "NO not found":
		return false, nil
	case strings.HasPrefix(answer, "OK "):
		return true, nil
	}
	return false, fmt.Errorf("the leader refused: %s", answer)
}

// recloneIfWALGone clones the leader again when the segment the leader
// said it no longer has (in pg_wal) is not in its archive either: without
// it this follower can never catch up.
func (a *Agent) recloneIfWALGone(ctx context.Context, holder, segment string) error {
	has, err := a.leaderArchiveHas(ctx, segment)
	if err != nil {
		return fmt.Errorf("ask the leader's archive for %s: %w", segment, err)
	}
	if has {
		return fmt.Errorf("catching up from the leader's archive (segment %s)", segment)
	}
	return a.reclone(ctx, holder, fmt.Sprintf("the leader no longer has WAL segment %s, in pg_wal or in its archive", segment))
}

// reclone removes this member's data and clones the leader again.
func (a *Agent) reclone(ctx context.Context, holder, why string) error {
	// The data goes only while the leader answers, on its own timeline:
	// in a double failure this member's copy may be the best one left.
	if err := a.leaderCheckpointed(ctx); err != nil {
		return fmt.Errorf("not cloning %s again while it cannot serve (%s): %w", holder, why, err)
	}
	replication, err := a.relayConninfo(names.ReplicationUser, "replication-password")
	if err != nil {
		return err
	}
	a.log.Info("Cloning the leader again", "leader", holder, "reason", why)
	a.ls.mu.Lock()
	a.ls.reclones++
	a.ls.lastReclone = why
	a.ls.mu.Unlock()
	rctx, cancel := a.longOperation(24 * time.Hour)
	err = a.instance.Reclone(rctx, replication, why)
	cancel()
	if err != nil {
		return fmt.Errorf("clone %s again (%s): %w", holder, why, err)
	}
	a.reclones.rewindFailures = 0
	return a.startFollower(ctx)
}
