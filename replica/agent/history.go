package agent

import (
	"fmt"

	"github.com/regent-dev/regent/internal/leadership"
)

// leaseHistory is what this agent has seen of the Lease: the highest epoch
// and who held it. Only the operator's election changes the holder, and it
// always moves the epoch up with it; within one epoch a holder can only
// release. A Lease that breaks this was written by someone else (a person,
// a token the admission policy does not cover), and an agent never leads
// on it: two leaders of one epoch could not be told apart by the relay's
// epoch check, and no seal or election would have chosen the new one.
type leaseHistory struct {
	epoch    int64
	holder   string // the first holder seen at epoch ("" if none yet)
	released bool   // seen with no holder at epoch
}

// observe records what the Lease says now and returns why it is not a
// Lease the operator's election wrote ("" when it is). A Lease it refuses
// leaves the history as it was, so that only a new epoch ends the refusal.
func (h *leaseHistory) observe(s leadership.State) string {
	switch {
	case s.Epoch < h.epoch:
		return fmt.Sprintf("the Lease went back from epoch %d to %d: refusing to lead on it", h.epoch, s.Epoch)
	case s.Epoch > h.epoch:
		*h = leaseHistory{epoch: s.Epoch, holder: s.Holder, released: s.Holder == ""}
	case s.Holder == "":
		h.released = true
	case h.released || s.Holder != h.holder:
		was := h.holder
		if h.released {
			was = "a release"
		}
		return fmt.Sprintf("the Lease's holder changed at epoch %d from %s to %s without an election: refusing to lead on it",
			s.Epoch, was, s.Holder)
	}
	return ""
}
