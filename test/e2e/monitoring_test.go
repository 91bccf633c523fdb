package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/netns"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// promAddr is where the tests' Prometheus listens, inside the cluster's
// network namespace.
const promAddr = "127.0.0.1:9090"

// prometheusConfig scrapes what the chart's PodMonitor and ServiceMonitor
// select (docs/observability.md): every database pod's agent, over TLS
// (each cluster has its own CA, so the certificate is not verified), with
// its namespace, pod and cluster as labels; and the operator, whose series
// carry their own namespace and pod labels. Debian's Prometheus is built
// without Kubernetes service discovery, so the targets come from files
// that discover writes from the API server, as kubernetes_sd_configs with
// the PodMonitor's relabelings would find them.
const prometheusConfig = `global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
- job_name: regent-agents
  scheme: https
  tls_config: {insecure_skip_verify: true}
  file_sd_configs: [{files: [%q], refresh_interval: 1s}]
- job_name: regent-operator
  honor_labels: true
  file_sd_configs: [{files: [%q], refresh_interval: 1s}]
`

// prometheus is Debian's Prometheus, run inside the cluster's network
// namespace with the chart's alerting rules.
type prometheus struct {
	api promv1.API
	log string
}

func startPrometheus(t *testing.T) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("Debian's prometheus is not installed (hack/deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	rules := filepath.Join(root, "charts", "regent", "files", "prometheus-rules.yaml")
	config := filepath.Join(dir, "prometheus.yml")
	agents, operator := filepath.Join(dir, "agents.json"), filepath.Join(dir, "operator.json")
	if err := os.WriteFile(config, fmt.Appendf(nil, prometheusConfig, rules, agents, operator), 0o600); err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { discover(dctx, agents, operator) })
	t.Cleanup(func() { stop(); wg.Wait() })
	logFile := filepath.Join(dir, "prometheus.log")
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := netns.Command(cfg.NetNS, bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=info")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("== prometheus.log\n%s", b)
		}
	})
	client, err := promapi.NewClient(promapi.Config{Address: "http://" + promAddr, RoundTripper: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, cfg.NetNS, network, addr)
		}}})
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{api: promv1.NewAPI(client), log: logFile}
	waitfor.Condition(t, 30*time.Second, "Prometheus answers", func() error {
		_, err := p.api.Buildinfo(t.Context())
		return err
	})
	return p
}

// targetGroup is one entry of a file_sd file.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// discover writes, every second until ctx ends, the agents' targets (each
// database pod's IP and agent-http port, with namespace, pod and cluster)
// and the operator's (the ready endpoints of the chart's metrics Service).
func discover(ctx context.Context, agents, operator string) {
	write := func(path string, groups []targetGroup) {
		b, _ := json.Marshal(groups)
		// Atomically, so that Prometheus never reads half a file.
		if os.WriteFile(path+".tmp", b, 0o600) == nil {
			_ = os.Rename(path+".tmp", path)
		}
	}
	for {
		if pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: names.LabelManagedBy + "=" + names.ManagedBy}); err == nil {
			groups := []targetGroup{}
			for _, p := range pods.Items {
				for _, c := range p.Spec.Containers {
					for _, port := range c.Ports {
						if port.Name == names.PortNameAgentHTTP && p.Status.PodIP != "" {
							groups = append(groups, targetGroup{Targets: []string{net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort)))},
								Labels: map[string]string{"namespace": p.Namespace, "pod": p.Name, "cluster": p.Labels[names.LabelCluster]}})
						}
					}
				}
			}
			write(agents, groups)
		}
		// The chart's metrics Service is the only one there with a port
		// named metrics.
		if eps, err := cs.DiscoveryV1().EndpointSlices("regent-system").List(ctx, metav1.ListOptions{}); err == nil {
			groups := []targetGroup{}
			for _, sl := range eps.Items {
				for _, port := range sl.Ports {
					if port.Name == nil || *port.Name != "metrics" || port.Port == nil {
						continue
					}
					for _, e := range sl.Endpoints {
						if e.Conditions.Ready != nil && *e.Conditions.Ready && len(e.Addresses) > 0 {
							groups = append(groups, targetGroup{Targets: []string{net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(*port.Port)))}})
						}
					}
				}
			}
			write(operator, groups)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// query returns the instant vector q evaluates to now.
func (p *prometheus) query(ctx context.Context, q string) (model.Vector, error) {
	v, _, err := p.api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("%s: a %s, not a vector", q, v.Type())
	}
	return vec, nil
}

// labelValues returns the values of label in vec, sorted.
func labelValues(vec model.Vector, label model.LabelName) []string {
	var out []string
	for _, s := range vec {
		out = append(out, string(s.Metric[label]))
	}
	slices.Sort(out)
	return out
}

// Prometheus (Debian's, scraping the pods inside the local cluster) sees
// what a user's would: exactly one leader before and after a failover, the
// failover counted once and alerted on, a frozen follower's lag rising, a
// removed member's series gone; and every panel of the chart's dashboard
// has data.
func TestPrometheusSeesOneLeaderAFailoverAndTheLag(t *testing.T) {
	const mns = "monitoring"
	ctx := t.Context()
	createHealthyCluster(t, mns, "mode: Async")
	dropWhenDone(t, mns)
	prom := startPrometheus(t)
	sel := fmt.Sprintf(`namespace=%q, cluster="db"`, mns)

	// expect waits until q returns series for exactly the pods want (by
	// label), each with a value that ok accepts.
	expect := func(what, q string, label model.LabelName, want []string, ok func(float64) bool) {
		t.Helper()
		waitfor.Condition(t, 60*time.Second, what, func() error {
			vec, err := prom.query(ctx, q)
			if err != nil {
				return err
			}
			got := labelValues(vec, label)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s: %s %v, want %v", q, label, got, want)
			}
			for _, s := range vec {
				if !ok(float64(s.Value)) {
					return fmt.Errorf("%s: %s", q, s)
				}
			}
			return nil
		})
	}
	anyValue := func(float64) bool { return true }
	one := func(v float64) bool { return v == 1 }

	leader := fieldIn(t, mns, ".status.leader")
	var followers []string
	for _, p := range []string{"db-0", "db-1", "db-2"} {
		if p != leader {
			followers = append(followers, p)
		}
	}
	all := []string{"db-0", "db-1", "db-2"}
	expect("every agent scraped, PostgreSQL up", fmt.Sprintf(`regent_postgres_up{%s} == 1`, sel), "pod", all, one)
	expect("exactly one leader", fmt.Sprintf(`regent_agent_leader{%s} == 1`, sel), "pod", []string{leader}, one)
	expect("a lag series per follower on the leader", fmt.Sprintf(`regent_postgres_replication_lag_bytes{%s}`, sel), "follower", followers, anyValue)
	failovers := func() float64 {
		t.Helper()
		vec, err := prom.query(ctx, fmt.Sprintf(`sum(regent_failovers_total{%s, kind="Failover"})`, sel))
		if err != nil {
			t.Fatal(err)
		}
		if len(vec) == 0 {
			return 0 // no failover yet: the counter has no series
		}
		return float64(vec[0].Value)
	}
	before := failovers()

	// Writes, so that a frozen follower falls behind.
	proxyAddr := serviceProxy(t, mns, "db-leader")
	_, dsn, _ := appDSN(t, mns)
	waitfor.Condition(t, 30*time.Second, "the ledger's table", func() error {
		conn, err := connectVia(ctx, dsn, proxyAddr)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
		return err
	})
	w := &writer{dsn: dsn, proxy: proxyAddr}
	wctx, stopWriter := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.run(wctx) })
	defer func() { stopWriter(); wg.Wait() }()
	w.waitWriting(t)

	frozen := followers[1]
	g := podGroupIn(t, mns, frozen)
	g.freeze(t, true)
	thawed := false
	defer func() {
		if !thawed {
			g.freeze(t, false)
		}
	}()
	var first float64
	waitfor.Condition(t, 60*time.Second, frozen+"'s lag rises in Prometheus", func() error {
		vec, err := prom.query(ctx, fmt.Sprintf(`regent_postgres_replication_lag_bytes{%s, follower=%q}`, sel, frozen))
		if err != nil {
			return err
		}
		if len(vec) != 1 {
			return fmt.Errorf("%v", vec)
		}
		if v := float64(vec[0].Value); first == 0 || v <= first {
			first = max(first, v)
			return fmt.Errorf("lag %v bytes, first seen %v", v, first)
		}
		return nil
	})
	expect("the frozen follower's lag in seconds", fmt.Sprintf(`regent_postgres_replication_lag_seconds{%s, follower=%q} > 1`, sel, frozen),
		"follower", []string{frozen}, anyValue)
	g.freeze(t, false)
	thawed = true
	expect(frozen+" caught up after the thaw", fmt.Sprintf(`regent_postgres_replication_lag_bytes{%s, follower=%q} < 1048576`, sel, frozen),
		"follower", []string{frozen}, anyValue)

	// A failover: the leader's pod freezes (a paused VM, a node that
	// stopped), its lease runs out; Prometheus cannot scrape it, so its
	// series go stale.
	epoch := fieldIn(t, mns, ".status.epoch")
	old := podGroupIn(t, mns, leader)
	old.freeze(t, true)
	thawedOld := false
	defer func() {
		if !thawedOld {
			old.freeze(t, false)
		}
	}()
	newLeader, _ := awaitNewLeader(t, mns, leader, epoch, 60*time.Second)
	t.Logf("failover %s → %s", leader, newLeader)
	expect("exactly one leader after the failover", fmt.Sprintf(`regent_agent_leader{%s} == 1`, sel), "pod", []string{newLeader}, one)
	old.freeze(t, false)
	thawedOld = true
	waitfor.Condition(t, 30*time.Second, "the failover counted once", func() error {
		if got := failovers(); got != before+1 {
			return fmt.Errorf("regent_failovers_total %v, was %v", got, before)
		}
		return nil
	})
	expect("the failover alert firing", fmt.Sprintf(`ALERTS{alertname="RegentFailover", alertstate="firing", %s}`, sel),
		"cluster", []string{"db"}, anyValue)
	expect("every member back", fmt.Sprintf(`regent_postgres_up{%s} == 1`, sel), "pod", all, one)
	expect("exactly one leader with the old one back", fmt.Sprintf(`regent_agent_leader{%s} == 1`, sel), "pod", []string{newLeader}, one)
	// Never two at once, at any second of the test, the thaw included: the
	// old leader's agent says 0 from its first scrape after the thaw.
	vec, err := prom.query(ctx, fmt.Sprintf(`max_over_time(count(regent_agent_leader{%s} == 1)[5m:1s])`, sel))
	if err != nil || len(vec) != 1 || vec[0].Value != 1 {
		t.Errorf("leaders at once, at most: %v (%v)", vec, err)
	}

	// Every panel of the dashboard has data now.
	checkDashboard(t, prom, mns)
	if dir := os.Getenv("REGENT_SCREENSHOTS"); dir != "" {
		shots(t, dir, sel)
	}

	// Scaled to 2: db-2's series go, on the agents' side and the
	// operator's, and no one is left reporting it.
	kubectl(t, "-n", mns, "patch", "dbrs/db", "--type=merge", "-p", `{"spec":{"replicas":2}}`)
	waitfor.Condition(t, 3*time.Minute, "db-2's series gone", func() error {
		for _, q := range []string{
			fmt.Sprintf(`{%s, pod="db-2"}`, sel),
			fmt.Sprintf(`{%s, follower="db-2"}`, sel),
		} {
			vec, err := prom.query(ctx, q)
			if err != nil {
				return err
			}
			if len(vec) > 0 {
				var names []string
				for _, s := range vec {
					names = append(names, string(s.Metric[model.MetricNameLabel]))
				}
				slices.Sort(names)
				return fmt.Errorf("%s: %d series (%s)", q, len(vec), strings.Join(slices.Compact(names), ", "))
			}
		}
		return nil
	})
	expect("exactly one leader after the scale-down", fmt.Sprintf(`regent_agent_leader{%s} == 1`, sel), "pod", []string{newLeader}, one)
}

// shots saves, for docs/observability.md, Prometheus's own graphs of the
// failover just seen, taken by headless Chromium inside the cluster's
// network namespace (make screenshots).
func shots(t *testing.T, dir, sel string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (hack/deps.sh screenshots installs it): %v", err)
	}
	for name, expr := range map[string]string{
		"failover-leader.png":  fmt.Sprintf(`regent_agent_leader{%s}`, sel),
		"failover-lag.png":     fmt.Sprintf(`regent_postgres_replication_lag_bytes{%s}`, sel),
		"failover-counter.png": fmt.Sprintf(`regent_failovers_total{%s}`, sel),
	} {
		q := url.Values{"g0.expr": {expr}, "g0.tab": {"0"}, "g0.range_input": {"1m"}}
		file := filepath.Join(dir, name)
		cmd := netns.Command(cfg.NetNS, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
			"--window-size=1400,900", "--virtual-time-budget=5000", "--screenshot="+file, "http://"+promAddr+"/graph?"+q.Encode())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, out)
		}
		t.Logf("saved %s (%s)", file, expr)
	}
}

// checkDashboard runs every query of the chart's Grafana dashboard, with
// its variables set to the namespace's cluster, and fails for each that
// returns no data.
func checkDashboard(t *testing.T, prom *prometheus, namespace string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "charts", "regent", "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$namespace", namespace, "${namespace}", namespace, "$cluster", "db", "${cluster}", "db",
		"$__rate_interval", "1m", "${__rate_interval}", "1m", "$__interval", "15s", "$__range", "5m")
	queries := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			if target.Expr == "" {
				continue
			}
			q := vars.Replace(target.Expr)
			queries++
			waitfor.Condition(t, 90*time.Second, fmt.Sprintf("panel %q has data", p.Title), func() error {
				vec, err := prom.query(t.Context(), q)
				if err == nil && len(vec) == 0 {
					err = fmt.Errorf("%s: no data", q)
				}
				return err
			})
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	t.Logf("%d dashboard panels, %d queries, each with data", len(dash.Panels), queries)
}
