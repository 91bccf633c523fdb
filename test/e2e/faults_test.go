package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/localcluster/netfault"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/test/history"
)

// convergeWithin is how long after the last fault the cluster must be
// whole again: every member ready, one leader, Healthy.
const convergeWithin = 60 * time.Second

// faultSoakSize is how long each mode's random faults last, and the seed:
// REGENT_FAULT_SOAK=<duration> (90 s by default in `make test`, 10 min in
// `make soak`), REGENT_SEED=<n> to replay a run (the faults and their
// timings are the seed's; what the cluster does meanwhile is not).
func faultSoakSize(t testing.TB) (time.Duration, int64) {
	t.Helper()
	d := 90 * time.Second
	if v := os.Getenv("REGENT_FAULT_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("REGENT_FAULT_SOAK=%q: want a duration, such as 10m", v)
		}
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("REGENT_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("REGENT_SEED=%q: want an integer", v)
		}
	}
	return d, seed
}

// Random faults on an Async and a Sync cluster, one after another, while
// clients write through the leader Service and straight to every pod; the
// history of each run is checked (test/history): in Sync mode no
// acknowledged write lost; in either mode nothing acknowledged by an epoch
// after its seal; one pod labelled leader at a time; whole again within
// 60 s of the last fault. A failing run leaves its history, the verdict
// and the cluster's logs in /tmp/regent-faults-<seed>-<mode>.
func TestRandomFaults(t *testing.T) {
	length, seed := faultSoakSize(t)
	t.Logf("random faults: %s per mode, seed %d (REGENT_SEED=%d replays it)", length, seed, seed)
	for i, mode := range []string{"Async", "Sync"} {
		t.Run(mode, func(t *testing.T) {
			s := newFaultRun(t, "e2e-faults-"+strings.ToLower(mode), mode, seed+int64(i))
			s.run(t, length)
		})
	}
}

type faultRun struct {
	ns, mode string
	seed     int64
	rng      *rand.Rand
	password string

	mu sync.Mutex
	h  history.History
	// watchBroken: a watch ended before the run did (the history of
	// labels or seals is incomplete).
	watchBroken string
	counts      map[string]int
}

func newFaultRun(t *testing.T, namespace, mode string, seed int64) *faultRun {
	t.Helper()
	replication := "mode: Async"
	if mode == "Sync" {
		replication = "mode: Sync\n    syncReplicas: 1"
	}
	createHealthyCluster(t, namespace, replication)
	dropWhenDone(t, namespace)
	super, err := cs.CoreV1().Secrets(namespace).Get(t.Context(), "db-superuser", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &faultRun{ns: namespace, mode: mode, seed: seed, rng: rand.New(rand.NewPCG(uint64(seed), 16)),
		password: string(super.Data["password"]), counts: map[string]int{}}
	s.h.Seed, s.h.Sync = seed, mode == "Sync"
	leader := fieldIn(t, namespace, ".status.leader")
	waitfor.Condition(t, 30*time.Second, "the table on the leader", func() error {
		c, err := s.connectPod(t.Context(), leader)
		if err != nil {
			return err
		}
		defer c.Close(t.Context())
		_, err = c.Exec(t.Context(), "CREATE TABLE IF NOT EXISTS soak (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
		return err
	})
	return s
}

func (s *faultRun) connectPod(ctx context.Context, pod string) (*pgx.Conn, error) {
	p, err := cs.CoreV1().Pods(s.ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return connectPod(ctx, s.ns, pod, p.Status.PodIP, s.password)
}

// insert is every client's statement: its own id, and the server's time
// and timeline (the epoch it leads: a promotion at epoch e takes timeline e).
const insert = "INSERT INTO soak (id) VALUES ($1) RETURNING at, ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int"

// client writes back to back through connect until ctx ends, and records
// every write in the history.
func (s *faultRun) client(ctx context.Context, index int, name, via string, connect func(context.Context) (*pgx.Conn, error)) {
	var conn *pgx.Conn
	next := int64(index) << 40
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, _ = connect(cctx)
			cancel()
			if conn == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		next++
		w := history.Write{ID: next, Client: name, Via: via, Invoked: time.Now()}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var epoch int64
		err := conn.QueryRow(qctx, insert, next).Scan(&w.ExecAt, &epoch)
		cancel()
		if err == nil {
			w.Acked, w.Epoch = time.Now(), epoch
		} else {
			_ = conn.Close(context.Background())
			conn = nil
		}
		s.mu.Lock()
		s.h.Writes = append(s.h.Writes, w)
		s.mu.Unlock()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if conn != nil {
		_ = conn.Close(context.Background())
	}
}

// watchHistory records the leader labels and the seals, through watches
// that resume where they stopped (the API server is among the faults).
func (s *faultRun) watchHistory(ctx context.Context, t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaderOf := map[string]bool{}
	for _, p := range pods.Items {
		if p.Labels[names.LabelRole] == names.RoleLeader {
			leaderOf[p.Name] = true
			s.h.Labels = append(s.h.Labels, history.LabelEvent{At: time.Now(), Pod: p.Name, Leader: true})
		}
	}
	pw, err := watchtools.NewRetryWatcherWithContext(ctx, pods.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().Pods(s.ns).Watch(ctx, o)
		}})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := cs.CoordinationV1().Leases(s.ns).Get(ctx, names.Lease("db"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lw, err := watchtools.NewRetryWatcherWithContext(ctx, lease.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = "metadata.name=" + names.Lease("db")
			return cs.CoordinationV1().Leases(s.ns).Watch(ctx, o)
		}})
	if err != nil {
		t.Fatal(err)
	}
	sealed := leadership.Of(lease).SealedEpoch
	epoch := int64(0)
	term := func(l *coordinationv1.Lease) {
		if l.Spec.LeaseTransitions == nil || int64(*l.Spec.LeaseTransitions) <= epoch || l.Spec.HolderIdentity == nil || l.Spec.AcquireTime == nil {
			return
		}
		epoch = int64(*l.Spec.LeaseTransitions)
		s.mu.Lock()
		s.h.Terms = append(s.h.Terms, history.Term{Epoch: epoch, Holder: *l.Spec.HolderIdentity, At: l.Spec.AcquireTime.Time})
		s.mu.Unlock()
	}
	term(lease)
	wg.Go(func() {
		defer pw.Stop()
		defer lw.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-pw.ResultChan():
				if !ok {
					s.broken(ctx, "pods")
					return
				}
				p, isPod := e.Object.(*corev1.Pod)
				if !isPod {
					continue
				}
				leads := e.Type != watch.Deleted && p.Labels[names.LabelRole] == names.RoleLeader
				if leads != leaderOf[p.Name] {
					leaderOf[p.Name] = leads
					s.mu.Lock()
					s.h.Labels = append(s.h.Labels, history.LabelEvent{At: time.Now(), Pod: p.Name, Leader: leads})
					s.mu.Unlock()
				}
			case e, ok := <-lw.ResultChan():
				if !ok {
					s.broken(ctx, "Lease")
					return
				}
				l, isLease := e.Object.(*coordinationv1.Lease)
				if !isLease {
					continue
				}
				term(l)
				st := leadership.Of(l)
				if st.SealedEpoch > sealed {
					sealed = st.SealedEpoch
					s.mu.Lock()
					s.h.Seals = append(s.h.Seals, history.Seal{Epoch: st.SealedEpoch, At: st.SealedAt})
					s.mu.Unlock()
				}
			}
		}
	})
}

// broken notes a watch that ended before ctx did.
func (s *faultRun) broken(ctx context.Context, what string) {
	if ctx.Err() == nil {
		s.mu.Lock()
		s.watchBroken = "the watch of the " + what + " ended early"
		s.mu.Unlock()
	}
}

func (s *faultRun) run(t *testing.T, length time.Duration) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	s.watchHistory(ctx, t, &wg)
	proxy := serviceProxy(t, s.ns, "db-leader")
	_, dsn, _ := appDSN(t, s.ns)
	for i := range 2 {
		wg.Go(func() {
			s.client(ctx, i, fmt.Sprintf("service-%d", i), "service", func(ctx context.Context) (*pgx.Conn, error) {
				return connectVia(ctx, dsn, proxy)
			})
		})
	}
	for i, pod := range []string{"db-0", "db-1", "db-2"} {
		wg.Go(func() {
			s.client(ctx, 2+i, "pinned-"+pod, pod, func(ctx context.Context) (*pgx.Conn, error) { return s.connectPod(ctx, pod) })
		})
	}
	end := time.Now().Add(length)
	for time.Now().Before(end) {
		s.fault(t)
		time.Sleep(time.Duration(2000+s.rng.IntN(6000)) * time.Millisecond)
	}
	s.h.FaultsEnded = time.Now()
	waitfor.Condition(t, convergeWithin+time.Minute, "the cluster whole again", func() error {
		if got := fieldIn(t, s.ns, ".status.phase"); got != "Healthy" {
			return fmt.Errorf("phase %s", got)
		}
		if got := fieldIn(t, s.ns, ".status.ready"); got != "3/3" {
			return fmt.Errorf("ready %s", got)
		}
		return nil
	})
	s.h.Converged = time.Now()
	// Let the clients write on the whole cluster for a moment, then stop.
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	leader := fieldIn(t, s.ns, ".status.leader")
	c, err := s.connectPod(t.Context(), leader)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(t.Context(), "SELECT id FROM soak")
	if err != nil {
		t.Fatal(err)
	}
	s.h.Final, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	_ = c.Close(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.watchBroken != "" {
		t.Errorf("the history is incomplete: %s", s.watchBroken)
	}
	v := history.Check(s.h, convergeWithin)
	faults := make([]string, 0, len(s.counts))
	for f, n := range s.counts {
		faults = append(faults, fmt.Sprintf("%s %d", f, n))
	}
	slices.Sort(faults)
	t.Logf("%s, seed %d: faults: %s; %d writes, %d seals; verdict: %s", s.mode, s.seed, strings.Join(faults, ", "),
		len(s.h.Writes), len(s.h.Seals), v)
	if !v.OK() {
		t.Errorf("the history breaks a promise (left in %s):\n%s", s.leaveBehind(t, v), v)
	}
}

// leaveBehind writes the history, the verdict and the cluster's logs to a
// directory that outlives the test, and returns it.
func (s *faultRun) leaveBehind(t *testing.T, v history.Verdict) string {
	t.Helper()
	dir := fmt.Sprintf("/tmp/regent-faults-%d-%s", s.seed, strings.ToLower(s.mode))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
		return dir
	}
	s.mu.Lock()
	b, err := json.MarshalIndent(s.h, "", " ")
	s.mu.Unlock()
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "verdict.txt"), []byte(v.String()+"\n"), 0o644)
	}
	if err != nil {
		t.Error(err)
	}
	if out, err := exec.Command("cp", "-r", filepath.Join(cfg.StateDir, "logs"), filepath.Join(cfg.StateDir, "nodes"), dir).CombinedOutput(); err != nil {
		t.Logf("copying the cluster's logs: %v: %s", err, out)
	}
	return dir
}

// fault injects one random fault and undoes it (a freeze thawed, a
// partition healed, the API server resumed, the scale put back).
func (s *faultRun) fault(t *testing.T) {
	t.Helper()
	leader := fieldIn(t, s.ns, ".status.leader")
	if leader == "" {
		leader = "db-0"
	}
	var followers []string
	for _, p := range []string{"db-0", "db-1", "db-2"} {
		if p != leader {
			followers = append(followers, p)
		}
	}
	hold := time.Duration(2000+s.rng.IntN(10000)) * time.Millisecond
	kinds := []string{"postgres-kill", "pod-kill", "pod-delete", "pod-freeze", "agent-freeze", "apiserver-stop",
		"partition-leader-apiserver", "partition-leader-followers", "partition-operator-pods", "switchover", "scale"}
	kind := kinds[s.rng.IntN(len(kinds))]
	target := []string{leader, leader, followers[s.rng.IntN(len(followers))]}[s.rng.IntN(3)]
	s.counts[kind]++
	switch kind {
	case "postgres-kill", "pod-kill", "pod-delete", "switchover":
		t.Logf("fault %s: %s", kind, target)
	case "pod-freeze", "agent-freeze":
		t.Logf("fault %s: %s for %s", kind, target, hold)
	default:
		t.Logf("fault %s (leader %s) for %s", kind, leader, hold)
	}
	switch kind {
	case "postgres-kill":
		if g, ok := s.podGroup(t, target); ok {
			_ = cgroupKill(g.sub(names.ContainerPostgres))
		}
	case "pod-kill":
		if g, ok := s.podGroup(t, target); ok {
			_ = cgroupKill(g)
		}
	case "pod-delete":
		_, _ = toolResult(t, "", "kubectl", "-n", s.ns, "delete", "pod", target, "--wait=false")
	case "pod-freeze", "agent-freeze":
		g, ok := s.podGroup(t, target)
		if !ok {
			return
		}
		if kind == "agent-freeze" {
			g = g.sub(names.ContainerAgent)
		}
		_ = cgroupFreeze(g, true)
		time.Sleep(hold)
		_ = cgroupFreeze(g, false)
	case "apiserver-stop":
		_ = cfg.Pause("kube-apiserver", true)
		time.Sleep(hold)
		if err := cfg.Pause("kube-apiserver", false); err != nil {
			t.Error(err)
		}
	case "partition-leader-apiserver", "partition-leader-followers", "partition-operator-pods":
		var a, b []string
		switch kind {
		case "partition-leader-apiserver":
			a, b = []string{s.ns + "/" + leader}, []string{"apiserver"}
		case "partition-leader-followers":
			a = []string{s.ns + "/" + leader}
			for _, f := range followers {
				b = append(b, s.ns+"/"+f)
			}
		default:
			ops, err := cs.CoreV1().Pods("regent-system").List(t.Context(), metav1.ListOptions{})
			if err != nil {
				return
			}
			for _, o := range ops.Items {
				a = append(a, "regent-system/"+o.Name)
			}
			for _, p := range []string{"db-0", "db-1", "db-2"} {
				b = append(b, s.ns+"/"+p)
			}
		}
		s.partition(t, kind, a, b, hold)
	case "switchover":
		_, _ = toolResult(t, "", "kubectl", "-n", s.ns, "annotate", "--overwrite", "dbrs/db", names.AnnotationSwitchoverTo+"="+target)
	case "scale":
		_, _ = toolResult(t, "", "kubectl", "-n", s.ns, "scale", "dbrs/db", "--replicas=4")
		time.Sleep(hold)
		_, _ = toolResult(t, "", "kubectl", "-n", s.ns, "scale", "dbrs/db", "--replicas=3")
	}
}

// partition cuts a from b for hold; pods that cannot be resolved (being
// recreated) are left out.
func (s *faultRun) partition(t *testing.T, name string, a, b []string, hold time.Duration) {
	t.Helper()
	resolve := func(refs []string) []netfault.Endpoint {
		var out []netfault.Endpoint
		for _, r := range refs {
			if e, err := cfg.Endpoint(t.Context(), cs, r); err == nil {
				out = append(out, e)
			}
		}
		return out
	}
	ea, eb := resolve(a), resolve(b)
	if len(ea) == 0 || len(eb) == 0 {
		return
	}
	if err := cfg.Partition(name, ea, eb); err != nil {
		t.Error(err)
		return
	}
	time.Sleep(hold)
	if err := cfg.Heal(name); err != nil {
		t.Error(err)
	}
}

// podGroup is pod's cgroup, if the pod is there.
func (s *faultRun) podGroup(t *testing.T, pod string) (group, bool) {
	t.Helper()
	p, err := cs.CoreV1().Pods(s.ns).Get(t.Context(), pod, metav1.GetOptions{})
	if err != nil || p.Spec.NodeName == "" {
		return group{}, false
	}
	return podGroupFor(p), true
}

func podGroupFor(p *corev1.Pod) group { return group{pod: p} }

func cgroupKill(g group) error { return cfg.Kill(g.pod, g.container) }

func cgroupFreeze(g group, on bool) error { return cfg.Freeze(g.pod, g.container, on) }
