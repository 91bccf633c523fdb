package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/replica/api"
)

var metav1GetOptions = metav1.GetOptions{}

// Status is what GET /status reports.
func (a *Agent) Status() api.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := api.Status{
		Pod: a.cfg.Pod, Mode: a.mode, Epoch: a.epoch, Fenced: a.fenced, Reason: a.reason,
		Running: a.pgStatus.Running, InRecovery: a.pgStatus.InRecovery, Timeline: a.pgStatus.Timeline,
		WriteLSN: a.pgStatus.WriteLSN, ReceivedLSN: a.pgStatus.ReceivedLSN, ReplayedLSN: a.pgStatus.ReplayedLSN,
		Streaming: a.pgStatus.Streaming, CommitGate: string(a.gate),
		SynchronousStandbyNames: a.pgStatus.SynchronousStandbyNames,
	}
	if a.lease != nil {
		st.Leader = ptrString(a.lease.Spec.HolderIdentity)
	}
	if a.sealedEpoch != 0 && a.sealedEpoch == a.epoch {
		st.Sealed, st.SealedLSN = true, a.sealedLSN
	}
	if a.mode == api.ModeLeader && !a.deadline.IsZero() {
		d := a.deadline
		st.LeaseDeadline = &d
	}
	if !a.lastContact.IsZero() {
		c := a.lastContact
		st.LastAPIContact = &c
	}
	return st
}

// ready: PostgreSQL serves in the role the agent intends; a follower also
// streams; a leader also holds a valid lease.
func (a *Agent) ready() (bool, string) {
	st := a.Status()
	a.mu.Lock()
	rolesDone := a.rolesDone
	a.mu.Unlock()
	switch {
	case st.Mode == api.ModeLeader && !rolesDone:
		return false, "roles and database not created yet"
	case !st.Running:
		return false, "PostgreSQL is not running"
	case st.Mode == api.ModeLeader && st.InRecovery:
		return false, "not promoted yet"
	case st.Mode == api.ModeLeader && (st.Fenced || st.LeaseDeadline == nil || !a.clock.Now().Before(*st.LeaseDeadline)):
		return false, "fenced: no valid lease"
	case st.Mode == api.ModeFollower && !st.InRecovery:
		return false, "runs as a leader but does not lead"
	case st.Mode == api.ModeFollower && !st.Streaming:
		return false, "not streaming from the leader"
	}
	return true, "ok"
}

func (a *Agent) serveHTTP(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Status())
	})
	mux.Handle("GET /metrics", a.metricsHandler())
	srv := &http.Server{Addr: net.JoinHostPort(a.cfg.PodIP, strconv.Itoa(a.cfg.HTTPPort)), Handler: mux,
		ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
