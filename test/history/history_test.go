package history

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func acked(id int64, epoch int64, exec int) Write {
	return Write{ID: id, Client: "c1", Via: "service", Invoked: at(exec - 1), ExecAt: at(exec), Acked: at(exec + 2), Epoch: epoch}
}

// A history with a failover from epoch 1 (sealed at 5 s) to epoch 2, every
// acknowledged row kept, labels moved one at a time, converged at once.
func good(sync bool) History {
	return History{
		Sync:   sync,
		Writes: []Write{acked(1, 1, 1000), acked(2, 1, 2000), {Client: "c1", Via: "db-0", Invoked: at(4000)}, acked(3, 2, 7000)},
		Seals:  []Seal{{Epoch: 1, At: at(5000)}},
		Labels: []LabelEvent{{At: at(0), Pod: "db-0", Leader: true}, {At: at(6000), Pod: "db-0"}, {At: at(6100), Pod: "db-1", Leader: true}},
		Final:  []int64{1, 2, 3}, FaultsEnded: at(10000), Converged: at(15000),
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*History)
		want   string // the property broken, "" for none
	}{
		{"a clean Sync history", func(*History) {}, ""},
		{"Sync: an acknowledged row missing", func(h *History) { h.Final = []int64{1, 3} }, "LostAcknowledgedWrite"},
		{"Async: an acknowledged row missing is within the loss budget", func(h *History) { h.Sync, h.Final = false, []int64{1, 3} }, ""},
		{"an unacknowledged row missing is no loss", func(h *History) { h.Writes = append(h.Writes, Write{ID: 9, Invoked: at(8000)}) }, ""},
		{"a row executed after its epoch's seal acknowledged", func(h *History) { h.Writes = append(h.Writes, acked(4, 1, 5000)) }, "AcknowledgedAfterSeal"},
		{"the same moment in a later epoch is fine", func(h *History) { h.Writes, h.Final = append(h.Writes, acked(4, 2, 5000)), append(h.Final, 4) }, ""},
		// db-0 leads epoch 1, is sealed at 5 s and elected again at 6 s as
		// epoch 2's leader: it keeps timeline 1.
		{"a leader elected again writes on its timeline in its new term", func(h *History) {
			h.Terms = []Term{{Epoch: 1, Holder: "db-0", At: at(0)}, {Epoch: 2, Holder: "db-0", At: at(6000)}}
			h.Writes, h.Final = append(h.Writes, acked(4, 1, 6500)), append(h.Final, 4)
		}, ""},
		{"a leader elected again acknowledged between its seal and its new term", func(h *History) {
			h.Terms = []Term{{Epoch: 1, Holder: "db-0", At: at(0)}, {Epoch: 2, Holder: "db-0", At: at(6000)}}
			h.Writes, h.Final = append(h.Writes, acked(4, 1, 5500)), append(h.Final, 4)
		}, "AcknowledgedAfterSeal"},
		{"another pod's term does not cover the old timeline", func(h *History) {
			h.Terms = []Term{{Epoch: 1, Holder: "db-0", At: at(0)}, {Epoch: 2, Holder: "db-1", At: at(6000)}}
			h.Writes, h.Final = append(h.Writes, acked(4, 1, 6500)), append(h.Final, 4)
		}, "AcknowledgedAfterSeal"},
		{"two pods labelled leader at once", func(h *History) {
			h.Labels = []LabelEvent{{Pod: "db-0", Leader: true}, {Pod: "db-1", Leader: true}, {Pod: "db-0"}}
		}, "TwoLeaders"},
		{"never converged", func(h *History) { h.Converged = time.Time{} }, "NotConverged"},
		{"converged too late", func(h *History) { h.Converged = at(80000) }, "NotConverged"},
	} {
		h := good(true)
		tc.change(&h)
		v := Check(h, time.Minute)
		switch {
		case tc.want == "" && !v.OK():
			t.Errorf("%s: %s", tc.name, v)
		case tc.want != "" && !slices.ContainsFunc(v.Violations, func(x Violation) bool { return x.Property == tc.want }):
			t.Errorf("%s: %s, want %s", tc.name, v, tc.want)
		}
	}
}

// Many violations of one kind are counted, not all listed.
func TestManyViolationsAreCounted(t *testing.T) {
	h := good(true)
	h.Final = nil
	for i := range 100 {
		h.Writes = append(h.Writes, acked(int64(10+i), 2, 8000+i))
	}
	v := Check(h, time.Minute)
	if len(v.Violations) != maxListed+1 || !strings.Contains(v.Violations[maxListed].Detail, "83 more") {
		t.Errorf("%d violations listed, last %v", len(v.Violations), v.Violations[len(v.Violations)-1])
	}
	if v.Acknowledged != 103 {
		t.Errorf("acknowledged %d, want 103", v.Acknowledged)
	}
}
