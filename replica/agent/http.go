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
	a.ls.mu.Lock()
	defer a.ls.mu.Unlock()
	st := api.Status{
		Pod: a.cfg.Pod, Mode: a.ls.mode, Epoch: a.ls.epoch, Fenced: a.ls.fenced, Reason: a.ls.reason,
		Running: a.ls.pgStatus.Running, InRecovery: a.ls.pgStatus.InRecovery, Timeline: a.ls.pgStatus.Timeline,
		WriteLSN: a.ls.pgStatus.WriteLSN, ReceivedLSN: a.ls.pgStatus.ReceivedLSN, ReplayedLSN: a.ls.pgStatus.ReplayedLSN,
		Streaming: a.ls.pgStatus.Streaming, CommitGate: string(a.ls.gate),
		SynchronousStandbyNames: a.ls.pgStatus.SynchronousStandbyNames,
		DiskUsedBytes:           a.ls.pgStatus.DiskUsedBytes, DiskTotalBytes: a.ls.pgStatus.DiskTotalBytes,
		StartFailure: a.ls.startFailure, Reclones: a.ls.reclones, LastReclone: a.ls.lastReclone,
		SystemIdentifier: a.ls.pgStatus.SystemIdentifier,
		WALShipping:      a.ls.pgStatus.WALShipping,
		Backup:           a.backupStatus(),
	}
	if a.ls.lease != nil {
		st.Leader = ptrString(a.ls.lease.Spec.HolderIdentity)
	}
	if a.ls.sealedEpoch != 0 && a.ls.sealedEpoch == a.ls.epoch {
		st.Sealed, st.SealedLSN = true, a.ls.sealedLSN
	}
	if a.ls.mode == api.ModeLeader && !a.ls.deadline.IsZero() {
		d := a.ls.deadline
		st.LeaseDeadline = &d
	}
	if !a.ls.lastContact.IsZero() {
		st.SinceAPIContact = &metav1.Duration{Duration: a.clock.Since(a.ls.lastContact)}
	}
	st.RevokedEpoch = a.ls.revokedEpoch
	st.SinceConfirmed = &metav1.Duration{Duration: a.clock.Since(a.ls.lastConfirmed)}
	st.Failsafe = a.ls.mode == api.ModeLeader && a.ls.failsafe && a.clock.Now().Before(a.ls.deadline)
	return st
}

// ready: PostgreSQL serves in the role the agent intends; a follower also
// streams; a leader also holds a valid lease.
func (a *Agent) ready() (bool, string) {
	st := a.Status()
	a.ls.mu.Lock()
	rolesDone := a.ls.rolesDone
	a.ls.mu.Unlock()
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
	// Over TLS with the pod's certificate: the operator elects by what
	// /status says, and checks that the pod itself says it.
	srv := &http.Server{Addr: net.JoinHostPort(a.cfg.PodIP, strconv.Itoa(a.cfg.HTTPPort)), Handler: mux,
		ReadHeaderTimeout: 5 * time.Second, TLSConfig: a.serverConfig(false)}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
