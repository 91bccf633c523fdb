// Package dataplane_test runs the data plane for real: three "pods", each a
// `regent instance` (running PostgreSQL 15) and a `regent agent` process
// with its own run directory and loopback address, against a real API
// server holding the pods and the Lease that the tests move by hand.
package dataplane_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/localcluster/loopvol"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
	"github.com/regent-dev/regent/internal/s3server"
	"github.com/regent-dev/regent/internal/testenv"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
	"github.com/regent-dev/regent/replica/objectstore"

	"github.com/regent-dev/regent/internal/waitfor"
)

var (
	env        *testenv.Env
	cs         *kubernetes.Clientset
	regentBin  string
	kubeconfig string
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP: the data-plane tests run PostgreSQL as the postgres user and need root")
		return 0
	}
	dir, err := os.MkdirTemp("", "regent-dataplane-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// PostgreSQL, as the postgres user, runs the binary for wal-push and
	// wal-fetch, as it runs /regent/bin/regent in a pod.
	_ = os.Chmod(dir, 0o755)
	regentBin = filepath.Join(dir, "regent")
	build := exec.Command("go", "build", "-o", regentBin, ".")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build regent: %v\n%s", err, out)
		return 1
	}
	if env, err = testenv.Start(testenv.CRDDir()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if cs, err = kubernetes.NewForConfig(env.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["t"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["t"] = &clientcmdapi.AuthInfo{ClientCertificateData: env.Config.CertData, ClientKeyData: env.Config.KeyData}
	kc.Contexts["t"] = &clientcmdapi.Context{Cluster: "t", AuthInfo: "t"}
	kc.CurrentContext = "t"
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

const superPW, replPW, appPW = "super-pw-1", "repl-pw-1", "app-pw-1"

// pod is one simulated database pod: its API object and its two processes.
type pod struct {
	name, ip, runDir, logDir string
	// password is the postgres role's, when not superPW.
	password string
	// roots and caFile are the cluster's CA, which p's certificate chains to.
	roots  *x509.CertPool
	caFile string
	procs  []*exec.Cmd
	// starts remembers how procs were started, for restart.
	starts [][]string
	env    []string
}

type cluster struct {
	t    testing.TB
	ns   string
	pods []*pod
	// pgBinDir replaces `pg_config --bindir` for the instances when set.
	pgBinDir string
	// volumes gives the named pods a data volume of that many bytes that
	// enforces its size (a loop-mounted filesystem), as a cloud disk would.
	volumes map[string]int64
	// ca issues the pods' certificates when the operator does not (caPEM
	// is its certificate, or the operator's CA's).
	ca    *pki.CA
	caPEM []byte
	// store is the object store the pods ship WAL to; nil for none.
	store *objectstore.Config
	// source and recovery make the first leader restore a backup from
	// source (at epoch firstEpoch) instead of running initdb.
	source     *objectstore.Config
	recovery   *instance.RestoreRequest
	firstEpoch int
}

// clusterOption changes how newCluster starts the pods.
type clusterOption func(*cluster)

// withVolume gives pod a data volume of size bytes that enforces its size.
func withVolume(pod string, size int64) clusterOption {
	return func(c *cluster) {
		if c.volumes == nil {
			c.volumes = map[string]int64{}
		}
		c.volumes[pod] = size
	}
}

// withStore gives the pods an object store (bucket "backups", path
// "<namespace>/db") on the S3 server srv.
func withStore(srv *s3server.Server) clusterOption {
	return func(c *cluster) {
		c.store = &objectstore.Config{Endpoint: srv.Endpoint, Bucket: "backups", Region: "us-east-1",
			AccessKeyID: s3server.AccessKey, SecretAccessKey: s3server.SecretKey}
	}
}

// withRecovery bootstraps the cluster from a backup in source, as the
// operator does: the Lease starts at firstEpoch (above the source's
// timelines) and says so, and the agents restore rather than initdb.
func withRecovery(source objectstore.Config, req instance.RestoreRequest, firstEpoch int) clusterOption {
	return func(c *cluster) { c.source, c.recovery, c.firstEpoch = &source, &req, firstEpoch }
}

// withPGBinDir runs the PostgreSQL tools from dir.
func withPGBinDir(dir string) clusterOption { return func(c *cluster) { c.pgBinDir = dir } }

func postgresUser(t testing.TB) (int, int) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// newCluster creates the pods' objects, the Lease (held by db-0 at epoch 1,
// db-0 labelled leader, as the operator does for a new cluster) and starts
// every process.
func newCluster(t testing.TB, n int, ipBase string, opts ...clusterOption) *cluster {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "dp-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ns: ns.Name}
	for _, o := range opts {
		o(c)
	}
	if c.store != nil {
		c.store.Path = c.ns + "/db"
	}
	c.newCA(t)
	first := max(c.firstEpoch, 1)
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: names.Lease("db"), Labels: names.Labels("db")},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("db-0"), LeaseTransitions: ptr.To(int32(first)),
			LeaseDurationSeconds: ptr.To[int32](6)},
	}
	leadership.Encode(leadership.State{Holder: "db-0", Epoch: int64(first), FirstEpoch: int64(first)}, lease)
	if _, err := cs.CoordinationV1().Leases(c.ns).Create(t.Context(), lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := &pod{name: names.Pod("db", i), ip: fmt.Sprintf("%s.%d", ipBase, i+1)}
		labels := names.Labels("db")
		if i == 0 {
			labels[names.LabelRole], labels[names.LabelEpoch] = names.RoleLeader, strconv.Itoa(first)
		}
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: p.name, Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}},
		}
		created, err := cs.CoreV1().Pods(c.ns).Create(t.Context(), obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.PodIP = p.ip
		if _, err := cs.CoreV1().Pods(c.ns).UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.issueCertificate(t, p)
		c.launch(t, p, map[string]string{"superuser-password": superPW, "replication-password": replPW, "app-password": appPW})
		c.pods = append(c.pods, p)
	}
	t.Cleanup(c.stop)
	return c
}

// launch gives pod p a run directory, a data directory and its secrets,
// and starts its instance and agent processes.
func (c *cluster) launch(t testing.TB, p *pod, passwords map[string]string) {
	t.Helper()
	uid, gid := postgresUser(t)
	base, err := os.MkdirTemp("", "regent-pod-"+p.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// REGENT_KEEP_PODS=1 keeps every pod's logs and data for a look.
		if os.Getenv("REGENT_KEEP_PODS") == "" {
			_ = os.RemoveAll(base)
		}
	})
	_ = os.Chmod(base, 0o755)
	p.runDir, p.logDir = filepath.Join(base, "run"), base
	c.trustCA(t, p)
	secrets := filepath.Join(base, "secrets")
	if size := c.volumes[p.name]; size > 0 {
		data := filepath.Join(base, "data")
		if err := loopvol.Create(data, size); err != nil {
			t.Fatal(err)
		}
		// After the pod's processes stop (c.stop runs first), before base goes.
		t.Cleanup(func() { _ = loopvol.Remove(data) })
	}
	for _, d := range []string{p.runDir, secrets, filepath.Join(base, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(d, uid, gid)
	}
	for f, v := range passwords {
		path := filepath.Join(secrets, f)
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(path, uid, gid)
	}
	envv := append(os.Environ(), "POD_NAME="+p.name, "POD_NAMESPACE="+c.ns, "POD_IP="+p.ip, names.EnvSharedPodNetwork+"=true",
		"REGENT_CLUSTER=db", "REGENT_RUN_DIR="+p.runDir, "PGDATA="+filepath.Join(base, "data", "pgdata"))
	if size := c.volumes[p.name]; size > 0 {
		// As the operator tells a pod its claim's size.
		envv = append(envv, names.EnvStorageSize+"="+strconv.FormatInt(size, 10))
	}
	bindir := c.pgBinDir
	if bindir == "" {
		bindir = pgBinDir(t)
	}
	instanceArgs := []string{"instance", "--run-as-user=postgres", "--superuser-password-file=" + filepath.Join(secrets, "superuser-password"),
		"--pg-bindir=" + bindir}
	// An object store's credentials, as the operator projects them.
	storeSecrets := func(s *objectstore.Config, name string) (string, string) {
		place, _ := json.Marshal(s)
		dir := filepath.Join(secrets, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(dir, uid, gid)
		for f, v := range map[string]string{names.ObjectStoreAccessKeyID: s.AccessKeyID, names.ObjectStoreSecretKey: s.SecretAccessKey} {
			// restore_command reads them as PostgreSQL's user.
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			_ = os.Chown(filepath.Join(dir, f), uid, gid)
		}
		return string(place), dir
	}
	if c.store != nil {
		place, dir := storeSecrets(c.store, "object-store")
		instanceArgs = append(instanceArgs, "--object-store="+place, "--object-store-secrets="+dir)
	}
	agentArgs := []string{"agent", "--kubeconfig=" + kubeconfig, "--secrets-dir=" + secrets}
	if c.source != nil {
		place, dir := storeSecrets(c.source, "recovery-store")
		instanceArgs = append(instanceArgs, "--recovery-store="+place, "--recovery-store-secrets="+dir)
		req, _ := json.Marshal(c.recovery)
		agentArgs = append(agentArgs, "--recovery="+string(req))
	}
	p.start(t, envv, instanceArgs...)
	p.start(t, envv, agentArgs...)
}

// pgBinDir is where the host's PostgreSQL tools are.
func pgBinDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Fatalf("pg_config --bindir: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func (p *pod) start(t testing.TB, envv []string, args ...string) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(p.logDir, args[0]+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(regentBin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = envv, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.procs = append(p.procs, cmd)
	p.starts, p.env = append(p.starts, args), envv
}

// kill stops the pod's processes and its PostgreSQL at once, as a node
// losing power would. The agent goes first and every signal is sent
// before any wait: an agent that outlived its instance by a moment would
// see PostgreSQL gone and release the Lease, which a power loss does not.
func (p *pod) kill() {
	for _, cmd := range slices.Backward(p.procs) {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// PostgreSQL runs in its own process group, started by instance.
	_ = exec.Command("pkill", "-KILL", "-f", "postgres -D "+filepath.Join(p.logDir, "data", "pgdata")).Run()
	for _, cmd := range p.procs {
		_ = cmd.Wait()
	}
}

// restart starts the pod's processes again, as its containers restarting.
func (p *pod) restart(t testing.TB) {
	t.Helper()
	starts := p.starts
	p.procs, p.starts = nil, nil
	for _, args := range starts {
		p.start(t, p.env, args...)
	}
}

func (c *cluster) stop() {
	for _, p := range c.pods {
		p.kill()
		if c.t.Failed() {
			for _, f := range []string{"instance.log", "agent.log"} {
				b, _ := os.ReadFile(filepath.Join(p.logDir, f))
				lines := strings.Split(string(b), "\n")
				c.t.Logf("== %s %s (tail)\n%s", p.name, f, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
	}
}

func (p *pod) status() (api.Status, error) {
	var st api.Status
	resp, err := p.https().Get(p.agentURL("/status"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (p *pod) ready() error {
	resp, err := p.https().Get(p.agentURL("/readyz"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b [200]byte
		n, _ := resp.Body.Read(b[:])
		return fmt.Errorf("%s not ready: %s", p.name, strings.TrimSpace(string(b[:n])))
	}
	return nil
}

func (p *pod) conn(ctx context.Context) (*pgx.Conn, error) {
	return p.connect(ctx, 3*time.Second)
}

func exec1(ctx context.Context, p *pod, sql string) error {
	c, err := p.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

func countRows(ctx context.Context, p *pod) (int, error) {
	c, err := p.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
	return n, err
}

// updateLease changes the Lease as the operator does: with optimistic
// concurrency, reading it again when an agent's renewal got in between.
func (c *cluster) updateLease(t testing.TB, mutate func(*coordinationv1.Lease)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease, err := cs.CoordinationV1().Leases(c.ns).Get(t.Context(), names.Lease("db"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(lease)
		_, err = cs.CoordinationV1().Leases(c.ns).Update(t.Context(), lease, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// updateProtocol changes the leadership state on the Lease as the operator
// does, through the protocol's codec.
func (c *cluster) updateProtocol(t testing.TB, change func(*leadership.State)) {
	t.Helper()
	c.updateLease(t, func(l *coordinationv1.Lease) {
		s := leadership.Of(l)
		change(&s)
		leadership.Encode(s, l)
	})
}

// moveLeadership does by hand what the operator's promotion steps do:
// unlabel the old leader, move the Lease with epoch+1, label the new one.
func (c *cluster) moveLeadership(t *testing.T, from, to string, epoch int) {
	t.Helper()
	ctx := t.Context()
	old, err := cs.CoreV1().Pods(c.ns).Get(ctx, from, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(old.Labels, names.LabelRole)
	delete(old.Labels, names.LabelEpoch)
	if _, err := cs.CoreV1().Pods(c.ns).Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.updateLease(t, func(lease *coordinationv1.Lease) {
		lease.Spec.HolderIdentity, lease.Spec.LeaseTransitions = ptr.To(to), ptr.To(int32(epoch))
		now := metav1.NewMicroTime(time.Now())
		lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, nil
	})
	winner, err := cs.CoreV1().Pods(c.ns).Get(ctx, to, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	winner.Labels[names.LabelRole], winner.Labels[names.LabelEpoch] = names.RoleLeader, strconv.Itoa(epoch)
	if _, err := cs.CoreV1().Pods(c.ns).Update(ctx, winner, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestLeaderFollowersReplicateAndPromote(t *testing.T) {
	c := newCluster(t, 3, "127.0.30")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, f1, f2 := c.pods[0], c.pods[1], c.pods[2]
	ctx := t.Context()
	for p, want := range map[*pod]string{leader: "regent_agent_leader 1", f1: "regent_agent_streaming 1"} {
		resp, err := p.https().Get(p.agentURL("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("%s /metrics lacks %q", p.name, want)
		}
	}
	if err := exec1(ctx, leader, "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('one')"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*pod{f1, f2} {
		waitfor.Condition(t, 20*time.Second, "row on "+f.name, func() error {
			n, err := countRows(ctx, f)
			if err == nil && n != 1 {
				err = fmt.Errorf("%d rows", n)
			}
			return err
		})
	}
	// The followers' /status agrees with the leader's pg_stat_replication.
	waitfor.Condition(t, 20*time.Second, "status LSNs match pg_stat_replication", func() error {
		lc, err := leader.conn(ctx)
		if err != nil {
			return err
		}
		defer lc.Close(ctx)
		rows, err := lc.Query(ctx, "SELECT application_name, replay_lsn::text FROM pg_stat_replication")
		if err != nil {
			return err
		}
		replayed := map[string]string{}
		for rows.Next() {
			var app, lsn string
			if err := rows.Scan(&app, &lsn); err != nil {
				return err
			}
			replayed[app] = lsn
		}
		for _, f := range []*pod{f1, f2} {
			st, err := f.status()
			if err != nil {
				return err
			}
			if got := replayed[names.Slot(f.name)]; got == "" || got != st.ReplayedLSN.Text() {
				return fmt.Errorf("%s: /status replayed %q, pg_stat_replication %q", f.name, st.ReplayedLSN, got)
			}
		}
		return nil
	})

	// Move leadership to db-1 and time the first accepted write there.
	var before time.Time
	getStart := func(p *pod) (time.Time, error) {
		cn, err := p.conn(ctx)
		if err != nil {
			return time.Time{}, err
		}
		defer cn.Close(ctx)
		var ts time.Time
		err = cn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&ts)
		return ts, err
	}
	before, err := getStart(f2)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Epoch 3, as if epoch 2 had gone to a pod that died at once: the
	// promotion takes timeline 3, a timeline of its own.
	c.moveLeadership(t, "db-0", "db-1", 3)
	waitfor.Condition(t, 30*time.Second, "a write accepted on db-1", func() error {
		return exec1(ctx, f1, "INSERT INTO t (v) VALUES ('two')")
	})
	took := time.Since(start)
	t.Logf("promotion: %s from the Lease move to the first write accepted on the new leader", took.Round(time.Millisecond))
	st, err := f1.status()
	if err != nil || st.Mode != api.ModeLeader || st.Epoch != 3 {
		t.Errorf("new leader's status %+v, %v", st, err)
	}
	// db-2 follows the new leader without a restart.
	waitfor.Condition(t, 30*time.Second, "db-2 has the new leader's row", func() error {
		n, err := countRows(ctx, f2)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
	after, err := getStart(f2)
	if err != nil || !after.Equal(before) {
		t.Errorf("db-2's PostgreSQL restarted (%s → %s, %v)", before, after, err)
	}
	// The old leader rejoins as a follower and gets the new row.
	waitfor.Condition(t, 60*time.Second, "db-0 follows", func() error {
		if err := leader.ready(); err != nil {
			return err
		}
		n, err := countRows(ctx, leader)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
	// Every member reports the new leader's timeline, long before a
	// restartpoint moves the followers' checkpoints to it: the operator
	// refuses candidates behind the newest timeline reported, so a stale
	// report would block the next failover.
	waitfor.Condition(t, 20*time.Second, "every member on timeline 3", func() error {
		for _, p := range c.pods {
			st, err := p.status()
			if err != nil {
				return err
			}
			if st.Timeline != 3 {
				return fmt.Errorf("%s reports timeline %d", p.name, st.Timeline)
			}
		}
		return nil
	})
	// The same once the stream is cut (a sealed follower reports with no
	// WAL receiver).
	c.updateProtocol(t, func(s *leadership.State) { s.SealedEpoch = 3 })
	waitfor.Condition(t, 20*time.Second, "sealed followers on timeline 3", func() error {
		for _, p := range []*pod{leader, f2} {
			st, err := p.status()
			if err != nil {
				return err
			}
			if !st.Sealed || st.Timeline != 3 {
				return fmt.Errorf("%s: sealed %v, timeline %d", p.name, st.Sealed, st.Timeline)
			}
		}
		return nil
	})
}
