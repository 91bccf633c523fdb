package dataplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/test/ledger"
)

var (
	operatorLog     sync.Once
	operatorLogFile switchedWriter
)

// switchedWriter writes to the current test's operator log, or nowhere
// between tests.
type switchedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchedWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}

func (s *switchedWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}

// startOperator runs the operator's reconciler, as `regent manager` does,
// until the test ends. Agents are read over HTTP on the pods' addresses.
func startOperator(t *testing.T) {
	t.Helper()
	// The operator's log goes to a file, shown when the test fails.
	logPath := filepath.Join(t.TempDir(), "operator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// controller-runtime takes only the first SetLogger of a process: each
	// test points the one logger at its own file.
	operatorLog.Do(func() {
		ctrl.SetLogger(zap.New(zap.WriteTo(&operatorLogFile), func(o *zap.Options) { o.TimeEncoder = zapcore.RFC3339NanoTimeEncoder }))
	})
	operatorLogFile.set(logFile)
	t.Cleanup(func() {
		operatorLogFile.set(nil)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("== operator log (tail)\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		_ = logFile.Close()
	})
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(regentv1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.ReplicaSetReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("regent-operator"),
		Images:   controllers.Images{Regent: "regent:test", Postgres: "postgres:15", PullPolicy: corev1.PullIfNotPresent}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("operator: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// operatedCluster is a ReplicaSet reconciled by the operator, whose pods
// the StatefulSet controller creates and the test runs, as a kubelet
// would: it gives each pod an address, starts its instance and agent, and
// reports its readiness from the agent's /readyz.
func operatedCluster(t *testing.T, ipBase string, mutate func(*regentv1.ReplicaSet), opts ...clusterOption) *cluster {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "op-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ns: ns.Name}
	for _, o := range opts {
		o(c)
	}
	startOperator(t)
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "db"}}
	rs.Spec.Replicas = ptr.To[int32](3)
	rs.Spec.Failover.LeaseDurationSeconds = ptr.To[int32](6)
	mutate(rs)
	if err := rtClient(t).Create(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	// The next test's operator would otherwise reconcile this cluster,
	// whose pods are gone, for the rest of the run.
	t.Cleanup(func() { _ = rtClient(t).Delete(context.Background(), rs) })
	passwords := map[string]string{}
	waitfor.Condition(t, 30*time.Second, "the operator's Secrets", func() error {
		for file, secret := range map[string]string{"superuser-password": "db-superuser",
			"replication-password": "db-replication", "app-password": "db-app"} {
			s, err := cs.CoreV1().Secrets(c.ns).Get(t.Context(), secret, metav1.GetOptions{})
			if err != nil {
				return err
			}
			passwords[file] = string(s.Data["password"])
		}
		return nil
	})
	for i := range 3 {
		p := &pod{name: names.Pod("db", i), ip: fmt.Sprintf("%s.%d", ipBase, i+1), password: passwords["superuser-password"]}
		waitfor.Condition(t, 30*time.Second, p.name+" created by the StatefulSet controller", func() error {
			_, err := cs.CoreV1().Pods(c.ns).Get(t.Context(), p.name, metav1.GetOptions{})
			return err
		})
		c.setPodStatus(t, p, false)
		c.launch(t, p, passwords)
		c.pods = append(c.pods, p)
	}
	t.Cleanup(c.stop)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.reportReadiness(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// setPodStatus reports the pod running at its address, ready or not.
func (c *cluster) setPodStatus(t *testing.T, p *pod, ready bool) {
	t.Helper()
	if err := c.reportPodStatus(p, ready); err != nil {
		t.Fatal(err)
	}
}

// reportPodStatus is setPodStatus for the readiness loop, which outlives
// any one test's reporting.
func (c *cluster) reportPodStatus(p *pod, ready bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := cs.CoreV1().Pods(c.ns).Get(context.Background(), p.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		obj.Status.Phase, obj.Status.PodIP, obj.Status.PodIPs = corev1.PodRunning, p.ip, []corev1.PodIP{{IP: p.ip}}
		obj.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: metav1.Now()},
		}
		_, err = cs.CoreV1().Pods(c.ns).UpdateStatus(context.Background(), obj, metav1.UpdateOptions{})
		return err
	})
}

// reportReadiness is the kubelet's readiness probe on every pod.
func (c *cluster) reportReadiness(ctx context.Context) {
	was := map[string]bool{}
	for ctx.Err() == nil {
		for _, p := range c.pods {
			ready := p.ready() == nil
			if r, ok := was[p.name]; !ok || r != ready {
				_ = c.reportPodStatus(p, ready)
				was[p.name] = ready
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitPodsReady waits until the API server reports every pod of c ready,
// as the operator sees them.
func (c *cluster) waitPodsReady(t *testing.T) {
	t.Helper()
	waitfor.Condition(t, 30*time.Second, "every pod ready in the API server", func() error {
		for _, p := range c.pods {
			obj, err := cs.CoreV1().Pods(c.ns).Get(t.Context(), p.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready := false
			for _, cond := range obj.Status.Conditions {
				ready = ready || (cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready {
				return fmt.Errorf("%s not ready", p.name)
			}
		}
		return nil
	})
}

// waitQuorumStreaming waits until the leader's pg_stat_replication shows
// each of the standbys (by application name) streaming and counted in its
// quorum.
func waitQuorumStreaming(t *testing.T, leader *pod, standbys ...string) {
	t.Helper()
	ctx := t.Context()
	waitfor.Condition(t, 30*time.Second, "the standbys streaming in the leader's quorum", func() error {
		cn, err := leader.conn(ctx)
		if err != nil {
			return err
		}
		defer cn.Close(ctx)
		rows, err := cn.Query(ctx, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'quorum'")
		if err != nil {
			return err
		}
		in, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, s := range standbys {
			if !slices.Contains(in, s) {
				return fmt.Errorf("%s not streaming in the quorum (quorum: %v)", s, in)
			}
		}
		return nil
	})
}

// syncLeaderWithTable waits until the leader runs with the synchronous
// standbys the operator put on the Lease, and creates the test table.
func syncLeaderWithTable(t *testing.T, leader *pod, want string) {
	t.Helper()
	ctx := t.Context()
	waitfor.Condition(t, 30*time.Second, "the leader runs with the operator's synchronous standbys", func() error {
		cn, err := leader.conn(ctx)
		if err != nil {
			return err
		}
		defer cn.Close(ctx)
		var v string
		if err := cn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&v); err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("synchronous_standby_names = %q, want %q", v, want)
		}
		_, err = cn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp())")
		return err
	})
}

// writer inserts rows, one at a time, through whichever pod holds the
// Lease, and remembers every row PostgreSQL acknowledged and when and
// where the first row after a given moment was accepted.
type writer struct {
	c *cluster

	mu    sync.Mutex
	acked []int
	by    map[int]string
	at    map[int]time.Time
}

func (w *writer) run(ctx context.Context) {
	ledger.Client{Connect: w.connect, QueryTimeout: 3 * time.Second, Acked: func(a ledger.Ack, on string) {
		w.mu.Lock()
		w.acked = append(w.acked, a.ID)
		w.by[a.ID], w.at[a.ID] = on, a.At
		w.mu.Unlock()
	}}.Run(ctx)
}

// connect connects to the pod that holds the Lease.
func (w *writer) connect(ctx context.Context) (*pgx.Conn, string, error) {
	lease, err := cs.CoordinationV1().Leases(w.c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	for _, p := range w.c.pods {
		if p.name == leadership.Of(lease).Holder {
			conn, err := p.connect(ctx, time.Second)
			return conn, p.name, err
		}
	}
	return nil, "", errors.New("no pod holds the Lease")
}

// startWriter runs a writer on c and returns once db-0 has acknowledged
// rows; stop ends it and waits for it (it may be called more than once,
// and runs at the test's end anyway).
func startWriter(t *testing.T, c *cluster) (*writer, func()) {
	t.Helper()
	w := &writer{c: c, by: map[int]string{}, at: map[int]time.Time{}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx) })
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	waitfor.Condition(t, 20*time.Second, "rows acknowledged by db-0", func() error {
		if _, ok := w.firstOn("db-0", time.Time{}); !ok {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	return w, stop
}

// firstOn is when the first row was acknowledged by pod, after t0.
func (w *writer) firstOn(pod string, t0 time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.acked {
		if w.by[id] == pod && w.at[id].After(t0) {
			return w.at[id], true
		}
	}
	return time.Time{}, false
}

// awaitFirstOn waits up to limit for pod to accept a write after since,
// and returns when it did.
func (w *writer) awaitFirstOn(t *testing.T, pod string, since time.Time, limit time.Duration, what string) time.Time {
	t.Helper()
	waitfor.Condition(t, limit, what, func() error {
		if _, ok := w.firstOn(pod, since); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	first, _ := w.firstOn(pod, since)
	return first
}

// The operator's whole failover with real agents and PostgreSQL, in Sync
// mode: the leader's PostgreSQL is killed (SIGKILL of the postmaster)
// under a writer; the agent releases the Lease, the operator seals epoch
// 1, elects a follower and moves the Lease; the writer's first accepted row
// on the new leader is timed, and every row acknowledged before or after
// the crash is on the new leader.
func TestOperatorFailsOverWithoutLosingAnAcknowledgedRow(t *testing.T) {
	c := operatedCluster(t, "127.0.39", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = regentv1.ReplicationSync
		rs.Spec.Replication.SyncReplicas = ptr.To[int32](1)
	})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	old := c.pods[0]
	syncLeaderWithTable(t, old, `ANY 1 ("db_1", "db_2")`)

	w, stop := startWriter(t, c)
	time.Sleep(500 * time.Millisecond) // some more rows under load: not a wait for a condition, a workload

	pid, err := old.postmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	crash := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var winner string
	waitfor.Condition(t, 60*time.Second, "a new leader accepts writes", func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		h := ptr.Deref(lease.Spec.HolderIdentity, "")
		if h == "" || h == "db-0" || ptr.Deref(lease.Spec.LeaseTransitions, 0) != 2 {
			return fmt.Errorf("Lease held by %q at epoch %d", h, ptr.Deref(lease.Spec.LeaseTransitions, 0))
		}
		if _, ok := w.firstOn(h, crash); !ok {
			return fmt.Errorf("%s leads epoch 2 but no write accepted yet", h)
		}
		winner = h
		return nil
	})
	first, _ := w.firstOn(winner, crash)
	t.Logf("leader's PostgreSQL killed → first write accepted by %s (epoch 2): %s", winner, first.Sub(crash).Round(time.Millisecond))
	// Where the time went, from the agents' logs and the Lease.
	lease, err := cs.CoordinationV1().Leases(c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
	if err == nil && lease.Spec.AcquireTime != nil {
		for _, step := range []struct{ what, pod, msg string }{
			{"Lease released by db-0", "db-0", "Released the Lease"},
			{"sealed by " + winner, winner, "Sealed: no more WAL"},
			{"promoted by " + winner, winner, "Promoted"},
		} {
			if at, ok := logTime(c, step.pod, step.msg); ok {
				t.Logf("  %-28s +%s", step.what, at.Sub(crash).Round(time.Millisecond))
			}
			if step.msg == "Sealed: no more WAL" {
				t.Logf("  %-28s +%s", "Lease moved by the operator", lease.Spec.AcquireTime.Sub(crash).Round(time.Millisecond))
			}
		}
	}
	stop()

	// Every acknowledged row is on the new leader.
	var newLeader *pod
	for _, p := range c.pods {
		if p.name == winner {
			newLeader = p
		}
	}
	lost, acked := w.missingOn(t, newLeader)
	t.Logf("%d rows acknowledged, %d lost", acked, lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged rows are missing on the new leader", lost)
	}
	// The operator's record of it.
	got := &regentv1.ReplicaSet{}
	waitfor.Condition(t, 20*time.Second, "status.lastFailover", func() error {
		if err := rtClient(t).Get(ctx, ctrlKey(c.ns), got); err != nil {
			return err
		}
		if got.Status.LastFailover == nil || got.Status.LastFailover.To != winner || got.Status.LastFailover.From != "db-0" {
			return fmt.Errorf("lastFailover = %+v", got.Status.LastFailover)
		}
		return nil
	})
	// The old leader comes back as a follower of the new one.
	waitfor.Condition(t, 120*time.Second, "db-0 follows the new leader", old.ready)
}

// logTime is when pod's agent first logged msg.
func logTime(c *cluster, pod, msg string) (time.Time, bool) {
	for _, p := range c.pods {
		if p.name != pod {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(p.logDir, "agent.log"))
		for _, line := range strings.Split(string(b), "\n") {
			var entry struct {
				TS  string `json:"ts"`
				Msg string `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && strings.HasPrefix(entry.Msg, msg) {
				if at, err := time.Parse(time.RFC3339Nano, entry.TS); err == nil {
					return at, true
				}
			}
		}
	}
	return time.Time{}, false
}

func rtClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(regentv1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ctrlKey is the key of the test's ReplicaSet, db, in namespace ns.
func ctrlKey(ns string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: "db"} }

// postmasterPID reads the pod's postmaster.pid.
func (p *pod) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.logDir, "data", "pgdata", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
}

// A switchover asked for with the ReplicaSet's annotation, with real
// agents and PostgreSQL: the leader stops cleanly and releases with its
// final position, the operator promotes the named follower once it holds
// that position, and no acknowledged row is lost (Async mode: the clean
// stop ships everything before the release).
func TestOperatorSwitchesOverOnRequest(t *testing.T) {
	c := operatedCluster(t, "127.0.40", func(*regentv1.ReplicaSet) {})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	if err := exec1(ctx, c.pods[0], "CREATE TABLE t (id serial PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	w, stop := startWriter(t, c)

	rt := rtClient(t)
	asked := time.Now()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rs := &regentv1.ReplicaSet{}
		if err := rt.Get(ctx, ctrlKey(c.ns), rs); err != nil {
			return err
		}
		rs.Annotations = map[string]string{names.AnnotationSwitchoverTo: "db-2"}
		return rt.Update(ctx, rs)
	})
	if err != nil {
		t.Fatal(err)
	}
	first := w.awaitFirstOn(t, "db-2", asked, 60*time.Second, "db-2 accepts writes at epoch 2")
	t.Logf("switchover asked → first write accepted by db-2: %s", first.Sub(asked).Round(time.Millisecond))
	stop()

	n, err := countRows(ctx, c.pods[2])
	if err != nil {
		t.Fatal(err)
	}
	if n < len(w.acked) {
		t.Fatalf("%d rows acknowledged, %d on the new leader", len(w.acked), n)
	}
	rs := &regentv1.ReplicaSet{}
	waitfor.Condition(t, 20*time.Second, "the switchover recorded and its request cleared", func() error {
		if err := rt.Get(ctx, ctrlKey(c.ns), rs); err != nil {
			return err
		}
		if rs.Annotations[names.AnnotationSwitchoverTo] != "" || rs.Status.LastFailover == nil ||
			rs.Status.LastFailover.Kind != regentv1.FailoverKindSwitchover || *rs.Status.LastFailover.EstimatedLostBytes != 0 {
			return fmt.Errorf("annotations %v, lastFailover %+v", rs.Annotations, rs.Status.LastFailover)
		}
		return nil
	})
	waitfor.Condition(t, 120*time.Second, "db-0 follows db-2", c.pods[0].ready)
}

// freeze stops (or resumes) every process of the pod, as a paused VM or a
// frozen cgroup would: its instance and agent (each its own process
// group), its postmaster, and every child of the postmaster (backends and
// walsenders call setsid, so no group signal reaches them). The postmaster
// stops first, so that it forks no child that would escape.
//
// The thaw is in the order least favourable to Regent: PostgreSQL first,
// the instance and the agent (watchdog, fence, relays, gate) 300 ms later,
// as on a loaded node that schedules them late. Backends then finish the
// commits their clients queued during the freeze, before anything of
// Regent's runs: only a mechanism inside PostgreSQL's commit path (the
// relay's check, the gate) can hold those acknowledgements back.
func (p *pod) freeze(t *testing.T, on bool) {
	t.Helper()
	sig := syscall.SIGSTOP
	if !on {
		sig = syscall.SIGCONT
	}
	pm, err := p.postmasterPID()
	if err == nil {
		_ = syscall.Kill(pm, sig)
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(pm)).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, sig)
			}
		}
	}
	if !on {
		time.Sleep(300 * time.Millisecond)
	}
	for _, cmd := range p.procs {
		_ = syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// rowIDs is the set of ids in table t on pod p.
// missingOn counts the rows w had acknowledged that p does not hold, and
// how many were acknowledged.
func (w *writer) missingOn(t *testing.T, p *pod) (missing, acked int) {
	t.Helper()
	have := rowIDs(t, p)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.acked {
		if !have[id] {
			missing++
		}
	}
	return missing, len(w.acked)
}

func rowIDs(t *testing.T, p *pod) map[int]bool {
	t.Helper()
	cn, err := p.conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close(t.Context())
	rows, err := cn.Query(t.Context(), "SELECT id FROM t")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for _, id := range ids {
		have[id] = true
	}
	return have
}

// A Sync-mode leader frozen as a whole (instance, agent, PostgreSQL) past
// its lease is replaced by the operator; thawed, it must not acknowledge a
// single commit, neither on the connection its clients kept nor on new
// ones, and no acknowledged row is lost. The relay's lease check and the
// seal are what stop it.
func TestFrozenSyncLeaderAcknowledgesNothingOnceThawed(t *testing.T) {
	frozenLeaderAcknowledgesNothingOnceThawed(t, "127.0.41", regentv1.ReplicationSync, `ANY 1 ("db_1", "db_2")`)
}

// The same in Async mode, where no follower's acknowledgement is needed:
// the commit gate is what stops the thawed leader. The only rows lost are
// those acknowledged before the freeze that no follower had received
// (counted and printed).
func TestFrozenAsyncLeaderAcknowledgesNothingOnceThawed(t *testing.T) {
	frozenLeaderAcknowledgesNothingOnceThawed(t, "127.0.43", regentv1.ReplicationAsync, leadership.Gate().String())
}

func frozenLeaderAcknowledgesNothingOnceThawed(t *testing.T, ipBase string, mode regentv1.ReplicationMode, standbys string) {
	t.Helper()
	c := operatedCluster(t, ipBase, func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = mode
		if mode == regentv1.ReplicationSync {
			rs.Spec.Replication.SyncReplicas = ptr.To[int32](1)
		}
	})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	old := c.pods[0]
	syncLeaderWithTable(t, old, standbys)

	// Clients of the old leader: three that keep their connection (or
	// reconnect to its address after an error).
	acks := make(chan ledger.Ack, 1<<16)
	pctx, stopPinned := context.WithCancel(ctx)
	var pinned sync.WaitGroup
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		return old.connect(ctx, time.Second)
	}
	for range 3 {
		pinned.Go(func() { ledger.Pinned(pctx, connect, acks) })
	}
	defer func() { stopPinned(); pinned.Wait() }()
	var acked []ledger.Ack
	waitfor.Condition(t, 20*time.Second, "the old leader acknowledges commits", func() error {
		if len(acks) < 20 {
			return fmt.Errorf("%d so far", len(acks))
		}
		return nil
	})

	old.freeze(t, true)
	frozen := time.Now()
	thawed := false
	defer func() {
		if !thawed {
			old.freeze(t, false)
		}
	}()
	var winner string
	waitfor.Condition(t, 60*time.Second, "a new leader at epoch 2", func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "" && h != old.name && ptr.Deref(lease.Spec.LeaseTransitions, 0) == 2 {
			winner = h
			return nil
		}
		return fmt.Errorf("not yet")
	})
	var newLeader *pod
	for _, p := range c.pods {
		if p.name == winner {
			newLeader = p
		}
	}
	waitfor.Condition(t, 30*time.Second, winner+" accepts a write", func() error {
		return exec1(ctx, newLeader, "INSERT INTO t (v) VALUES ('new leader')")
	})
	firstNew := time.Now()
	t.Logf("%s: old leader frozen → %s writes: %s", mode, winner, firstNew.Sub(frozen).Round(time.Millisecond))
	for len(acks) > 0 {
		acked = append(acked, <-acks)
	}
	old.freeze(t, false)
	thawed = true
	thawedAt := time.Now()
	// Its clients keep trying for a while: no commit executed after the
	// freeze may be acknowledged. A commit that the gate (or a follower)
	// acknowledged just before the freeze, its acknowledgement still
	// unread by the frozen walsender, reaches its client after the thaw:
	// decided before the freeze, delivered after (protocol.md), counted.
	time.Sleep(8 * time.Second)
	stopPinned()
	pinned.Wait()
	for len(acks) > 0 {
		acked = append(acked, <-acks)
	}
	late, inFlight := ledger.AfterThaw(acked, frozen, thawedAt)
	if late > 0 {
		t.Fatalf("the thawed old leader acknowledged %d commits executed after the freeze, after %s's first commit", late, winner)
	}
	t.Logf("thawed old leader: 0 commits executed after the freeze acknowledged in 8 s of trying with 3 clients; "+
		"%d acknowledgements decided before the freeze delivered after the thaw", inFlight)
	waitfor.Condition(t, 120*time.Second, old.name+" rejoins as a follower", old.ready)

	// Which acknowledged rows the new leader has.
	have := rowIDs(t, newLeader)
	lost, lostAfterFreeze := ledger.Lost(acked, have, frozen)
	t.Logf("%s: %d of %d acknowledged rows lost (committed before the freeze, not yet on any follower)", mode, lost, len(acked))
	switch {
	case mode == regentv1.ReplicationSync && lost > 0:
		t.Errorf("Sync mode lost %d acknowledged rows", lost)
	case lostAfterFreeze > 0:
		t.Errorf("%d lost rows were executed after the freeze", lostAfterFreeze)
	}
}

// dataDurability Preferred with real PostgreSQL: with ANY 2 of two
// followers, a follower lost (frozen) stalls every commit; once it has been
// unready for the lease duration the operator lowers the quorum to the
// follower left, the leader reloads, and the writer's commits go on, each
// on db-1. The lost follower's return restores ANY 2.
func TestPreferredQuorumLetsWritesGoOnWithoutALostFollower(t *testing.T) {
	c := operatedCluster(t, "127.0.46", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replication.Mode = regentv1.ReplicationSync
		rs.Spec.Replication.SyncReplicas = ptr.To[int32](2)
		rs.Spec.Replication.DataDurability = regentv1.DataDurabilityPreferred
	})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	leader, left, lost := c.pods[0], c.pods[1], c.pods[2]
	syncLeaderWithTable(t, leader, `ANY 2 ("db_1", "db_2")`)
	// Everything the lowering depends on, before the freeze: both
	// followers ready in the API server and streaming, counted in the
	// leader's quorum.
	c.waitPodsReady(t)
	waitQuorumStreaming(t, leader, "db_1", "db_2")

	w, stop := startWriter(t, c)

	lost.freeze(t, true)
	frozen := time.Now()
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			lost.freeze(t, false)
		}
	})
	syncLeaderWithTable(t, leader, `ANY 1 ("db_1")`)
	lowered := time.Now()
	var resumed time.Time
	waitfor.Condition(t, 20*time.Second, "a commit acknowledged under the lowered quorum", func() error {
		at, ok := w.firstOn("db-0", lowered)
		if !ok {
			return fmt.Errorf("none yet")
		}
		resumed = at
		return nil
	})
	t.Logf("Preferred: db-2 frozen → quorum lowered to ANY 1 (db_1) after %s, commits acknowledged again after %s",
		lowered.Sub(frozen).Round(time.Millisecond), resumed.Sub(frozen).Round(time.Millisecond))
	// The operator clocks db-2's absence from a pass after the freeze.
	if lowered.Sub(frozen) < 6*time.Second {
		t.Errorf("the quorum was lowered %s after the freeze, before the operator had seen the follower gone for the lease duration (6 s)",
			lowered.Sub(frozen).Round(time.Millisecond))
	}

	// Every commit acknowledged so far is on db-1, the standby left.
	stop()
	missing, acked := w.missingOn(t, left)
	if missing != 0 {
		t.Errorf("%d of %d acknowledged rows are not on db-1", missing, acked)
	}

	lost.freeze(t, false)
	thawed = true
	syncLeaderWithTable(t, leader, `ANY 2 ("db_1", "db_2")`)
}

// A member scaled away loses its slot on the leader once its pod is gone:
// nothing holds WAL for a pod that will not come back.
func TestAMemberScaledAwayLosesItsSlot(t *testing.T) {
	c := operatedCluster(t, "127.0.49", func(*regentv1.ReplicaSet) {})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	leader := c.pods[0]
	slots := func() ([]string, error) {
		conn, err := leader.conn(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close(ctx)
		rows, _ := conn.Query(ctx, "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'db\\_%' ORDER BY 1")
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	waitfor.Condition(t, 30*time.Second, "a slot for each follower", func() error {
		got, err := slots()
		if err != nil || !slices.Equal(got, []string{"db_1", "db_2"}) {
			return fmt.Errorf("slots %v (%w)", got, err)
		}
		return nil
	})
	rt := rtClient(t)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rs := &regentv1.ReplicaSet{}
		if err := rt.Get(ctx, ctrlKey(c.ns), rs); err != nil {
			return err
		}
		rs.Spec.Replicas = ptr.To[int32](2)
		return rt.Update(ctx, rs)
	}); err != nil {
		t.Fatal(err)
	}
	// The StatefulSet controller deletes pod db-2; its "kubelet" stops it.
	waitfor.Condition(t, 30*time.Second, "db-2 deleted", func() error {
		if _, err := cs.CoreV1().Pods(c.ns).Get(ctx, "db-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%w)", err)
		}
		return nil
	})
	c.pods[2].kill()
	stopped := time.Now()
	waitfor.Condition(t, 30*time.Second, "only db-1's slot left", func() error {
		got, err := slots()
		if err != nil || !slices.Equal(got, []string{"db_1"}) {
			return fmt.Errorf("slots %v (%w)", got, err)
		}
		return nil
	})
	t.Logf("db-2's slot dropped %s after its pod stopped", time.Since(stopped).Round(100*time.Millisecond))
}

// A leader pod whose processes restart and whose PostgreSQL then cannot
// start (a setting it refuses, say; a full disk or corrupt WAL do the same)
// releases the Lease instead of holding it while it serves nothing: a
// follower takes over (before, the restarted agent renewed for good).
func TestALeaderWhosePostgreSQLCannotStartReleasesTheLease(t *testing.T) {
	c := operatedCluster(t, "127.0.61", func(*regentv1.ReplicaSet) {})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	old := c.pods[0]
	winner, took := restartLeaderWith(t, c, old, "shared_buffers = 'lots'", 60*time.Second)
	t.Logf("the restarted leader's PostgreSQL refused to start; %s leads %s after the restart", winner,
		took.Round(100*time.Millisecond))
	log, _ := os.ReadFile(filepath.Join(old.logDir, "agent.log"))
	if !strings.Contains(string(log), "PostgreSQL does not start under the leader: releasing the Lease") {
		t.Errorf("db-0's agent did not say it released the Lease for its failed start")
	}
}

// A restarted leader whose PostgreSQL starts but never accepts connections
// (here every session sleeps ten minutes after logging in, as behind a hung
// disk or a crash recovery that does not end) gives the Lease up after the
// agent's start timeout (30 s): a follower leads.
func TestALeaderWhosePostgreSQLDoesNotAnswerAfterItsStartReleasesTheLease(t *testing.T) {
	c := operatedCluster(t, "127.0.62", func(*regentv1.ReplicaSet) {})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	old := c.pods[0]
	// The first leader recorded the cluster's identity on the Lease.
	waitfor.Condition(t, 30*time.Second, "the system identifier on the Lease", func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		conn, err := old.conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var id string
		if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&id); err != nil {
			return err
		}
		if got := lease.Annotations[names.AnnotationSystemIdentifier]; got != id {
			return fmt.Errorf("the Lease records %q, the leader's data is %s", got, id)
		}
		return nil
	})
	winner, took := restartLeaderWith(t, c, old, "post_auth_delay = 600", 90*time.Second)
	t.Logf("the restarted leader's PostgreSQL never answered; %s leads %s after the restart", winner, took.Round(100*time.Millisecond))
	log, _ := os.ReadFile(filepath.Join(old.logDir, "agent.log"))
	if !strings.Contains(string(log), "has not accepted connections in 30s") {
		t.Errorf("db-0's agent did not say it gave the Lease up for a start that did not end")
	}
	if took < 30*time.Second {
		t.Errorf("the Lease moved %s after the restart, before the start timeout: not for the reason tested", took)
	}
}

// restartLeaderWith kills the leader old, adds setting to its PostgreSQL's
// postgresql.auto.conf, restarts it, and waits up to within for a
// follower to lead. It returns the follower, and how long after the
// restart it led.
func restartLeaderWith(t *testing.T, c *cluster, old *pod, setting string, within time.Duration) (string, time.Duration) {
	t.Helper()
	old.kill()
	auto := filepath.Join(old.logDir, "data", "pgdata", "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(setting + "\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	restarted := time.Now()
	old.restart(t)
	var winner string
	waitfor.Condition(t, within, "a follower leads", func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(t.Context(), names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		h := ptr.Deref(lease.Spec.HolderIdentity, "")
		if h == "" || h == old.name {
			return fmt.Errorf("Lease held by %q at epoch %d", h, ptr.Deref(lease.Spec.LeaseTransitions, 0))
		}
		winner = h
		return nil
	})
	return winner, time.Since(restarted)
}
