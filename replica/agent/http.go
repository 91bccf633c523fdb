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
		Managed:          a.managedStatus(a.ls.mode),
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

// Readiness moves the pod in and out of its Service, and the kubelet asks
// only once a second: a leader or follower that is merely between two
// states must not be left out for that second (docs/failover.md).
const (
	// followerStreamGrace: a follower whose stream stopped this recently
	// stays ready (a switchover or a failover in progress: it serves reads,
	// and the winner among them must not wait for a probe to serve writes).
	followerStreamGrace = 3 * time.Second
	// readyzHold: how long /readyz holds the answer of a leader whose
	// promotion is finishing, inside the probe's one-second timeout.
	readyzHold = 700 * time.Millisecond
)

// ready: PostgreSQL serves in the role the agent intends; a follower also
// streams, or did within followerStreamGrace; a leader also holds a valid
// lease. settling says the answer is a leader's promotion still finishing,
// worth waiting for.
func (a *Agent) ready() (ok bool, why string, settling bool) {
	st := a.Status()
	a.ls.mu.Lock()
	rolesDone, streamedAt := a.ls.rolesDone, a.ls.streamedAt
	a.ls.mu.Unlock()
	switch {
	case st.Mode == api.ModeLeader && !rolesDone:
		return false, "roles and database not created yet", st.Running
	case !st.Running:
		return false, "PostgreSQL is not running", false
	case st.Mode == api.ModeLeader && st.InRecovery:
		return false, "not promoted yet", true
	case st.Mode == api.ModeLeader && (st.Fenced || st.LeaseDeadline == nil || !a.clock.Now().Before(*st.LeaseDeadline)):
		return false, "fenced: no valid lease", false
	case st.Mode == api.ModeFollower && !st.InRecovery:
		return false, "runs as a leader but does not lead", false
	case st.Mode == api.ModeFollower && !st.Streaming &&
		(streamedAt.IsZero() || a.clock.Since(streamedAt) >= followerStreamGrace):
		return false, "not streaming from the leader", false
	case st.Mode == api.ModeFollower && !st.Streaming:
		return true, "ok: between leaders, streamed " + a.clock.Since(streamedAt).Round(time.Millisecond).String() + " ago", false
	}
	return true, "ok", false
}

// readyWithin is ready, waiting up to hold while the answer is settling.
func (a *Agent) readyWithin(ctx context.Context, hold time.Duration) (bool, string) {
	deadline := time.Now().Add(hold)
	for {
		ok, why, settling := a.ready()
		if ok || !settling || !time.Now().Before(deadline) {
			return ok, why
		}
		select {
		case <-ctx.Done():
			return ok, why
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *Agent) serveHTTP(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := a.readyWithin(r.Context(), readyzHold)
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
