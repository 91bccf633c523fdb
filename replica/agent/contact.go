package agent

// The contact keeper: what the relay checks (mayFollow) stays fresh while a
// pass is busy with a long step.

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/replica/api"
)

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
	everySecond(ctx, a.readLeaseIfBusy)
}

// readLeaseIfBusy is one of keepContact's reads.
func (a *Agent) readLeaseIfBusy(ctx context.Context) {
	a.ls.mu.Lock()
	busy, last := a.ls.passBusy, a.ls.lastContact
	a.ls.mu.Unlock()
	if !busy || a.clock.Since(last) < time.Second {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	start := a.clock.Now()
	lease, err := a.cfg.Client.CoordinationV1().Leases(a.cfg.Namespace).Get(rctx, a.leaseName(), metav1.GetOptions{})
	cancel()
	if err != nil {
		return
	}
	a.ls.mu.Lock()
	if start.After(a.ls.lastContact) {
		a.ls.lastContact = start
		// A leader's renewals write a.ls.lease themselves (newer than
		// this read, maybe); a follower's relay checks this one.
		if a.ls.mode != api.ModeLeader {
			a.ls.storeLease(lease)
		}
	}
	a.ls.mu.Unlock()
}
