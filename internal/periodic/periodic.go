// Package periodic runs a function on a period and on demand, the loop
// behind the agent's keepers and instance's WAL shipper.
package periodic

import (
	"context"
	"time"
)

// Run runs f every period, and at once whenever wake fires (a nil wake
// never does), until ctx ends.
func Run(ctx context.Context, period time.Duration, wake <-chan struct{}, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		f(ctx)
	}
}
