package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/regent-dev/regent/replica/instance"
)

// Start attempts after failures are spaced as a kubelet spaces container
// restarts: a PostgreSQL that exits at once (a parameter it refuses, a
// damaged data directory) wakes the pass as it exits, and would otherwise
// be started again dozens of times a second, flooding its log.
const (
	firstStartBackoff = time.Second
	maxStartBackoff   = 20 * time.Second
)

// startBackoff is the pass's memory of failed starts; only the pass uses it.
type startBackoff struct {
	failures  int
	notBefore time.Time
	last      error
}

// start starts PostgreSQL, unless the last start failed too recently: then
// it returns that failure again, with when the next attempt comes.
func (a *Agent) start(ctx context.Context, opts instance.StartOptions) error {
	return a.attempt(ctx, func() error { return a.instance.Start(ctx, opts) })
}

// attempt runs a start (or a restore, which ends in one) with the same
// spacing after failures, reported as the start failure.
func (a *Agent) attempt(ctx context.Context, f func() error) error {
	b := &a.startBackoff
	now := a.clock.Now()
	if now.Before(b.notBefore) {
		return fmt.Errorf("%w (trying again in %s)", b.last, b.notBefore.Sub(now).Round(time.Second))
	}
	err := f()
	switch {
	case err == nil:
		b.failures, b.notBefore = 0, time.Time{}
		a.ls.mu.Lock()
		a.ls.startFailure = ""
		a.ls.mu.Unlock()
		return nil
	case ctx.Err() != nil:
		return err // the pass ran out of time: no verdict on PostgreSQL
	}
	a.ls.mu.Lock()
	a.ls.startFailure = err.Error()
	a.ls.mu.Unlock()
	delay := min(firstStartBackoff<<min(b.failures, 5), maxStartBackoff)
	b.failures++
	b.notBefore, b.last = a.clock.Now().Add(delay), err
	return err
}
