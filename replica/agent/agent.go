// Package agent is `regent agent`, the sidecar of every database pod and the
// only in-pod process that talks to Kubernetes (docs/architecture.md, docs/data-plane.md). It watches
// its own pod and its cluster's Lease, decides whether its PostgreSQL leads
// or follows, drives `regent instance` accordingly, renews the Lease while it
// leads (and fences itself when it cannot), relays replication between pods
// with an epoch check on both ends, and serves a read-only HTTP API.
package agent

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/periodic"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// Config configures an agent.
type Config struct {
	Namespace, Cluster, Pod, PodIP string
	// RunDir holds instance's socket, PostgreSQL's and the relay's.
	RunDir string
	// SecretsDir holds superuser-password, replication-password and
	// app-password.
	SecretsDir string
	// AppDatabase and AppOwner are created with the first leader.
	AppDatabase, AppOwner string
	// Recovery, when set, makes the first leader restore a backup from
	// the recovery store instead of running initdb.
	Recovery *instance.RestoreRequest
	// RelayPort is the leader side's TCP port (5433); HTTPPort the API's.
	RelayPort, HTTPPort int
	Client              kubernetes.Interface
	Clock               clock.Clock
	Log                 logr.Logger
}

// Agent runs one pod's side of the protocol.
type Agent struct {
	cfg      Config
	clock    clock.Clock
	log      logr.Logger
	instance *instance.Client
	relays   *relaySet
	// wake asks the run loop for a pass now (see watch.go).
	wake chan struct{}
	// runCtx ends when the agent stops: long operations (initdb, base
	// backup, rewind) run under it, not under a pass's short timeout.
	runCtx context.Context

	// ls is what every runnable of the agent shares (state.go).
	ls leadershipState
	// startBackoff spaces failed starts of PostgreSQL (backoff.go).
	startBackoff startBackoff
	// reclones counts failed rewinds (reclone.go).
	reclones recloneState
	// tls is the pod's key pair and the cluster's CA (tls.go);
	// tlsChanged wakes keepTLS when a new pair is loaded.
	tls        memberTLS
	tlsChanged chan struct{}
	// members is the cluster's size, as the StatefulSet says (slots.go).
	members membership
	// peers are the members' pod IPs as last read (failsafe.go).
	peers peerAddresses
	// managed is the declared roles and databases (managed.go).
	managed managedState
	// relayRefused counts the relay handshakes refused, by reason.
	relayRefused *prometheus.CounterVec
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	c := cfg.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	return &Agent{cfg: cfg, clock: c, log: cfg.Log, instance: instance.NewClient(cfg.RunDir),
		relays: newRelaySet(), wake: make(chan struct{}, 1), tlsChanged: make(chan struct{}, 1),
		managed: managedState{changed: make(chan struct{}, 1)},
		ls:      leadershipState{mode: api.ModeFollower, lastConfirmed: c.Now()},
		relayRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "regent", Subsystem: "agent",
			Name: "relay_refused_total", Help: "Relay handshakes refused by this agent, by reason."}, []string{"reason"})}
}

func (a *Agent) leaseName() string { return names.Lease(a.cfg.Cluster) }

// longOperation is the context for a step that may take far longer than a
// pass (initdb, a base backup, a rewind): cancelling one half-way leaves
// work to redo, so it ends only with the agent or after limit.
func (a *Agent) longOperation(limit time.Duration) (context.Context, context.CancelFunc) {
	parent := a.runCtx
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, limit)
}

// Run drives the pod until ctx ends. Its runnables share the leadership
// state (state.go) and start together: the pass (pass.go), which alone
// decides and acts; the lease keeper (lease.go), the contact keeper
// (contact.go) and the failsafe keeper (failsafe.go); the commit gate (gate.go); the relay's server and dialer
// (relay.go); the WAL server (wal.go); the HTTP API (http.go); and the
// watches that wake the pass (watch.go); and the certificate's keeper
// (tls.go), which is also awaited before anything else starts; and the
// membership keeper, which drops former members' slots (slots.go). A runnable that fails stops them
// all, and the pass shuts PostgreSQL down cleanly on the way out.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	a.runCtx = ctx
	if err := a.awaitTLS(ctx); err != nil {
		return err
	}
	a.watchObjects(ctx)
	a.watchManaged(ctx)
	for _, run := range []func(context.Context){a.keepLease, a.keepContact, a.keepFailsafe, a.runGate, a.watchInstance, a.keepTLS, a.keepMembership, a.keepManaged} {
		g.Go(func() error { run(ctx); return nil })
	}
	for _, serve := range []func(context.Context) error{a.serveRelay, a.serveLocalAPI, a.serveFollowerRelay, a.serveHTTP} {
		g.Go(func() error { return serve(ctx) })
	}
	g.Go(func() error { a.runPasses(ctx); return nil })
	return g.Wait()
}

// runPasses runs a pass every second and whenever something it decides on
// changes, until ctx ends; then it shuts down. The pass period is not
// safety-critical (deadlines are), so a plain ticker does.
func (a *Agent) runPasses(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		a.pass(ctx)
		select {
		case <-ctx.Done():
			a.shutdown()
			return
		case <-t.C:
		case <-a.wake:
		}
	}
}

// everySecond runs f once a second until ctx ends.
func everySecond(ctx context.Context, f func(context.Context)) { everySecondOr(ctx, nil, f) }

// everySecondOr runs f once a second, and at once whenever wake fires (a
// nil wake never does), until ctx ends.
func everySecondOr(ctx context.Context, wake <-chan struct{}, f func(context.Context)) {
	periodic.Run(ctx, time.Second, wake, f)
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
