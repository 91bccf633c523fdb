package agent

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/regent-dev/regent/replica/instance"
)

// A PostgreSQL that fails to start is started again after 1 s, 2 s, 4 s …
// (at most 20 s), not at every wake-up of the pass; a start that succeeds
// resets the spacing.
func TestFailedStartsAreSpacedOut(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, instance.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	var starts atomic.Int32
	var failing atomic.Bool
	failing.Store(true)
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		starts.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(instance.ErrorResponse{Error: `invalid value for parameter "shared_buffers": "lots"`})
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	clock := clocktesting.NewFakeClock(time.Now())
	a := &Agent{clock: clock, instance: instance.NewClient(dir)}
	attempt := func(wantStarts int32, wantText string) {
		t.Helper()
		err := a.start(t.Context(), instance.StartOptions{Role: instance.RoleFollower})
		if got := starts.Load(); got != wantStarts {
			t.Fatalf("%d starts, want %d", got, wantStarts)
		}
		if wantText == "" && err != nil || wantText != "" && (err == nil || !strings.Contains(err.Error(), wantText)) {
			t.Fatalf("error %v, want one saying %q", err, wantText)
		}
	}
	attempt(1, `"shared_buffers": "lots"`)
	if got := a.Status().StartFailure; !strings.Contains(got, `"shared_buffers": "lots"`) {
		t.Errorf("status reports the start failure as %q", got)
	}
	attempt(1, "trying again in 1s") // woken at once: no new start
	clock.Step(time.Second)
	attempt(2, "lots")
	clock.Step(time.Second)
	attempt(2, "trying again in 1s")
	clock.Step(time.Second)
	attempt(3, "lots")
	for range 10 { // the spacing grows to its cap
		clock.Step(maxStartBackoff)
		attempt(starts.Load()+1, "lots")
	}
	clock.Step(maxStartBackoff - time.Second)
	attempt(starts.Load(), "trying again in 1s")

	failing.Store(false)
	clock.Step(time.Second)
	attempt(starts.Load()+1, "")
	if got := a.Status().StartFailure; got != "" {
		t.Errorf("after a start, status still reports a failure: %q", got)
	}
	failing.Store(true)
	attempt(starts.Load()+1, "lots")
	clock.Step(time.Second)
	attempt(starts.Load()+1, "lots") // after a success, 1 s again
}
