// Package history checks what the randomized fault soak saw (the clients'
// writes, the seals the operator wrote, the leader labels as a watch saw
// them, the rows left after the faults) against the properties Regent
// promises (docs/protocol.md): in Sync mode no acknowledged write is lost;
// in either mode no commit is acknowledged by an epoch after its seal; at
// most one pod is labelled leader at a time; the cluster converges within
// a bound once the faults stop.
//
// The histories are append-only sets of rows with unique ids, so the
// check is direct: no search over linearizations is needed. Every time in
// a history is read on one host's clock (the soak, the local cluster and
// its PostgreSQL servers share the machine).
package history

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Write is one INSERT a client made.
type Write struct {
	// ID is the row's id (unique in the history); 0 when no answer came.
	ID int64 `json:"id,omitempty"`
	// Client names the client; Via where it wrote ("service" or a pod).
	Client string `json:"client"`
	Via    string `json:"via"`
	// Invoked is when the client sent it; Acked when it saw the
	// acknowledgement (zero: failed, or no answer).
	Invoked time.Time `json:"invoked"`
	Acked   time.Time `json:"acked,omitzero"`
	// ExecAt is the server's clock_timestamp() at execution and Epoch the
	// timeline it wrote on (the promotion at epoch e takes timeline e; a
	// leader elected again keeps its timeline, see Term): known for
	// acknowledged writes.
	ExecAt time.Time `json:"execAt,omitzero"`
	Epoch  int64     `json:"epoch,omitempty"`
}

// Term is an epoch as the Lease named it: its holder, from its acquire
// time. A pod that leads consecutive epochs (the operator elected the old
// leader again, with its data) goes on writing on the timeline of the
// first: its writes on that timeline after a later term's start belong to
// that term.
type Term struct {
	Epoch  int64     `json:"epoch"`
	Holder string    `json:"holder"`
	At     time.Time `json:"at"`
}

// Seal is the operator's seal of an epoch, at the time it wrote on the
// Lease (regent.dev/sealed-at).
type Seal struct {
	Epoch int64     `json:"epoch"`
	At    time.Time `json:"at"`
}

// LabelEvent is a pod's leader label as one watch saw it change, in the
// API server's order.
type LabelEvent struct {
	At     time.Time `json:"at"`
	Pod    string    `json:"pod"`
	Leader bool      `json:"leader"`
}

// History is one soak run.
type History struct {
	Seed   int64        `json:"seed"`
	Sync   bool         `json:"sync"`
	Writes []Write      `json:"writes"`
	Seals  []Seal       `json:"seals"`
	Terms  []Term       `json:"terms"`
	Labels []LabelEvent `json:"labels"`
	// Final are the row ids the converged cluster's leader holds.
	Final []int64 `json:"final"`
	// FaultsEnded is when the last fault was healed; Converged when the
	// cluster was first whole again after it (zero: never).
	FaultsEnded time.Time `json:"faultsEnded"`
	Converged   time.Time `json:"converged,omitzero"`
}

// Violation is one broken promise.
type Violation struct {
	Property string `json:"property"`
	Detail   string `json:"detail"`
}

func (v Violation) String() string { return v.Property + ": " + v.Detail }

// Verdict is the checker's answer for one history.
type Verdict struct {
	Sync       bool        `json:"sync"`
	Violations []Violation `json:"violations"`
	// Acknowledged counts the acknowledged writes; LostAsync those an
	// Async cluster lost (within its loss budget, not a violation).
	Acknowledged int `json:"acknowledged"`
	LostAsync    int `json:"lostAsync"`
	// ConvergedIn is how long the cluster took to converge after the
	// faults (negative: never).
	ConvergedIn time.Duration `json:"convergedIn"`
}

// OK says whether no promise was broken.
func (v Verdict) OK() bool { return len(v.Violations) == 0 }

func (v Verdict) String() string {
	if v.OK() {
		lost := "none lost"
		if !v.Sync {
			lost = fmt.Sprintf("%d lost (Async: within maxLagBytes)", v.LostAsync)
		}
		return fmt.Sprintf("ok: %d acknowledged writes, %s, converged in %s",
			v.Acknowledged, lost, v.ConvergedIn.Round(time.Millisecond))
	}
	lines := make([]string, 0, len(v.Violations))
	for _, x := range v.Violations {
		lines = append(lines, x.String())
	}
	return fmt.Sprintf("%d violations:\n%s", len(v.Violations), strings.Join(lines, "\n"))
}

// maxListed bounds how many violations of one property are listed.
const maxListed = 20

// Check checks h; converge is the bound on convergence.
func Check(h History, converge time.Duration) Verdict {
	v := Verdict{Sync: h.Sync}
	add := func(property string, counts map[string]int, detail string) {
		counts[property]++
		if counts[property] <= maxListed {
			v.Violations = append(v.Violations, Violation{Property: property, Detail: detail})
		}
	}
	counts := map[string]int{}
	final := map[int64]bool{}
	for _, id := range h.Final {
		final[id] = true
	}
	sealed := map[int64]time.Time{}
	for _, s := range h.Seals {
		if t, ok := sealed[s.Epoch]; !ok || s.At.Before(t) {
			sealed[s.Epoch] = s.At
		}
	}
	terms := map[int64]Term{}
	for _, t := range h.Terms {
		terms[t.Epoch] = t
	}
	for _, w := range h.Writes {
		if w.Acked.IsZero() {
			continue
		}
		v.Acknowledged++
		if !final[w.ID] {
			if h.Sync {
				add("LostAcknowledgedWrite", counts, fmt.Sprintf("row %d (%s via %s, acknowledged at %s, epoch %d) is not on the leader",
					w.ID, w.Client, w.Via, stamp(w.Acked), w.Epoch))
			} else {
				v.LostAsync++
			}
		}
		// Executed at or after its epoch's seal and still acknowledged:
		// the acknowledgement came after the seal.
		epoch := servingEpoch(terms, w)
		if at, ok := sealed[epoch]; ok && !w.ExecAt.Before(at) {
			add("AcknowledgedAfterSeal", counts, fmt.Sprintf("row %d (%s via %s) executed at %s in epoch %d, sealed at %s, and was acknowledged",
				w.ID, w.Client, w.Via, stamp(w.ExecAt), epoch, stamp(at)))
		}
	}
	leaders := map[string]bool{}
	for _, e := range h.Labels {
		if e.Leader {
			leaders[e.Pod] = true
		} else {
			delete(leaders, e.Pod)
		}
		if len(leaders) > 1 {
			pods := make([]string, 0, len(leaders))
			for p := range leaders {
				pods = append(pods, p)
			}
			slices.Sort(pods)
			add("TwoLeaders", counts, fmt.Sprintf("%s labelled leader together at %s", strings.Join(pods, " and "), stamp(e.At)))
		}
	}
	v.ConvergedIn = -1
	switch {
	case h.Converged.IsZero():
		add("NotConverged", counts, fmt.Sprintf("not whole again after the faults ended at %s", stamp(h.FaultsEnded)))
	default:
		v.ConvergedIn = max(0, h.Converged.Sub(h.FaultsEnded))
		if v.ConvergedIn > converge {
			add("NotConverged", counts, fmt.Sprintf("whole again %s after the faults ended, more than %s", v.ConvergedIn, converge))
		}
	}
	for p, n := range counts {
		if n > maxListed {
			v.Violations = append(v.Violations, Violation{Property: p, Detail: fmt.Sprintf("%d more", n-maxListed)})
		}
	}
	return v
}

// servingEpoch is the epoch whose leader acknowledged w: the timeline's
// own epoch, or a later one its holder led next without a break (elected
// again, it kept its timeline) that had begun when w executed.
func servingEpoch(terms map[int64]Term, w Write) int64 {
	first, ok := terms[w.Epoch]
	if !ok {
		return w.Epoch
	}
	epoch := w.Epoch
	for e := w.Epoch + 1; ; e++ {
		t, ok := terms[e]
		if !ok || t.Holder != first.Holder || t.At.After(w.ExecAt) {
			return epoch
		}
		epoch = e
	}
}

func stamp(t time.Time) string { return t.UTC().Format("15:04:05.000") }
