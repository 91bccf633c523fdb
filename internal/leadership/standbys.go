package leadership

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/regent-dev/regent/internal/names"
)

// StandbysKind says whom a leader's commits wait for.
type StandbysKind int

const (
	// NoStandbys means commits wait for no one (a Lease not yet configured).
	NoStandbys StandbysKind = iota
	// CommitGate means commits wait for the leader's own commit gate, which
	// acknowledges only while its lease is valid (Async mode, or Sync
	// mode with dataDurability Preferred and no follower left).
	CommitGate
	// Quorum means commits wait for K of Members (Sync mode).
	Quorum
	// Unreadable is a value the codec cannot read (never written by
	// Regent); a leader keeps what it runs.
	Unreadable
)

// Standbys are the synchronous standbys a leader runs with, as the operator
// sets them on the Lease and PostgreSQL's synchronous_standby_names says
// them.
type Standbys struct {
	Kind StandbysKind
	// K of Members (pod names) must confirm each commit (Kind Quorum).
	K       int
	Members []string
}

// Gate is the commit gate alone.
func Gate() Standbys { return Standbys{Kind: CommitGate} }

// AnyOf is a quorum of k of pods.
func AnyOf(k int, pods []string) Standbys {
	return Standbys{Kind: Quorum, K: k, Members: slices.Clone(pods)}
}

// Equal says whether two values ask for the same standbys.
func (s Standbys) Equal(o Standbys) bool {
	return s.Kind == o.Kind && s.K == o.K && slices.Equal(s.Members, o.Members)
}

// Names returns the members of a quorum (none for any other kind).
func (s Standbys) Names() []string {
	if s.Kind != Quorum {
		return nil
	}
	return s.Members
}

// String is the value of synchronous_standby_names: "" for none,
// FIRST 1 (regent_gate) for the gate, ANY k ("pod_1", …) by slot name for
// a quorum. Unreadable values print as "".
func (s Standbys) String() string {
	switch s.Kind {
	case CommitGate:
		return "FIRST 1 (" + names.CommitGate + ")"
	case Quorum:
		slots := make([]string, len(s.Members))
		for i, pod := range s.Members {
			slots[i] = strconv.Quote(names.Slot(pod))
		}
		return fmt.Sprintf("ANY %d (%s)", s.K, strings.Join(slots, ", "))
	}
	return ""
}

var quorumSyntax = regexp.MustCompile(`^ANY ([1-9][0-9]?) \((.+)\)$`)

// ParseStandbys reads a value String writes, and only those.
func ParseStandbys(v string) (Standbys, error) {
	switch v {
	case "":
		return Standbys{}, nil
	case Gate().String():
		return Gate(), nil
	}
	m := quorumSyntax.FindStringSubmatch(v)
	if m == nil {
		return Standbys{}, fmt.Errorf("%q is not a value Regent writes (\"\", the commit gate, or ANY k (…))", v)
	}
	k, _ := strconv.Atoi(m[1])
	q := Standbys{Kind: Quorum, K: k}
	for _, f := range strings.Split(m[2], ",") {
		slot, err := strconv.Unquote(strings.TrimSpace(f))
		if err != nil || slot == "" || strings.Contains(slot, "-") {
			return Standbys{}, fmt.Errorf("%q: %s is not a quoted slot name", v, strings.TrimSpace(f))
		}
		q.Members = append(q.Members, names.SlotPod(slot))
	}
	if k > len(q.Members) {
		return Standbys{}, fmt.Errorf("%q asks for more standbys than it names", v)
	}
	return q, nil
}
