package agent

import (
	"strings"
	"testing"

	"github.com/regent-dev/regent/internal/leadership"
)

// The Lease as an agent sees it over time, and whether it may lead on it:
// the operator's elections always raise the epoch; anything else that moves
// the holder is refused until a new epoch.
func TestLeaseHistoryRefusesHoldersNoElectionChose(t *testing.T) {
	at := func(epoch int64, holder string) leadership.State {
		return leadership.State{Epoch: epoch, Holder: holder}
	}
	for _, tc := range []struct {
		name string
		seen []leadership.State
		want string // part of the refusal of the last one; "" accepted
	}{
		{"the first Lease seen", []leadership.State{at(39, "pg-1")}, ""},
		{"renewals", []leadership.State{at(39, "pg-1"), at(39, "pg-1")}, ""},
		{"a release", []leadership.State{at(39, "pg-1"), at(39, "")}, ""},
		{"an election after a release", []leadership.State{at(39, "pg-1"), at(39, ""), at(40, "pg-0")}, ""},
		{"an election over a live leader", []leadership.State{at(39, "pg-1"), at(41, "pg-0")}, ""},
		{"the holder moved at the same epoch", []leadership.State{at(39, "pg-1"), at(39, "pg-0")},
			"changed at epoch 39 from pg-1 to pg-0 without an election"},
		{"taken back after a release", []leadership.State{at(39, "pg-1"), at(39, ""), at(39, "pg-1")},
			"changed at epoch 39 from a release to pg-1"},
		{"still refused on the next look", []leadership.State{at(39, "pg-1"), at(39, "pg-0"), at(39, "pg-0")},
			"from pg-1 to pg-0"},
		{"an older epoch", []leadership.State{at(39, "pg-1"), at(38, "pg-0")}, "went back from epoch 39 to 38"},
		{"a new epoch ends the refusal", []leadership.State{at(39, "pg-1"), at(39, "pg-0"), at(40, "pg-0")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h leaseHistory
			var got string
			for _, s := range tc.seen {
				got = h.observe(s)
			}
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("refusal %q, want %q", got, tc.want)
			}
		})
	}
}
