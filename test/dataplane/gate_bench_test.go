package dataplane_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// BenchmarkCommitGate measures what the commit gate costs an Async-mode
// leader: pgbench's TPC-B-like transactions against one leader whose agent
// runs the gate, alternately with synchronous_commit=on (every commit waits
// for the gate's acknowledgement) and synchronous_commit=local (commits
// skip it), on the same server in the same run. `make bench` prints it.
func BenchmarkCommitGate(b *testing.B) {
	c := newCluster(b, 1, "127.0.44")
	leader := c.pods[0]
	c.updateProtocol(b, func(s *leadership.State) { s.Standbys = leadership.Gate() })
	waitfor.Condition(b, 90*time.Second, "leader ready", leader.ready)
	waitfor.Condition(b, 30*time.Second, "the gate is the leader's synchronous standby", func() error {
		cn, err := leader.conn(b.Context())
		if err != nil {
			return err
		}
		defer cn.Close(b.Context())
		var state string
		if err := cn.QueryRow(b.Context(),
			"SELECT sync_state FROM pg_stat_replication WHERE application_name = $1", names.CommitGate).Scan(&state); err != nil {
			return err
		}
		if state != "sync" {
			return fmt.Errorf("sync_state %q", state)
		}
		return nil
	})
	pgbench := filepath.Join(pgBinDir(b), "pgbench")
	base := []string{"-h", leader.ip, "-p", "5432", "-U", "postgres"}
	run := func(args []string, syncCommit string) (string, error) {
		cmd := exec.CommandContext(b.Context(), pgbench, append(append(slices.Clone(base), args...), "app")...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+superPW, "PGOPTIONS=-c synchronous_commit="+syncCommit,
			"PGSSLMODE=verify-full", "PGSSLROOTCERT="+leader.caFile)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run([]string{"-i", "-q", "-s", "4"}, "on"); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}

	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchGate(b, run, clients)
		})
	}
}

// benchGate runs pgbench alternately without and with the gate and reports
// throughput and latency percentiles for both.
func benchGate(b *testing.B, run func(args []string, syncCommit string) (string, error), clients int) {
	b.Helper()
	const rounds, seconds = 3, 8
	type result struct {
		tps       []float64
		latencies []float64 // milliseconds, every transaction
	}
	results := map[string]*result{"local": {}, "on": {}}
	logDir := b.TempDir()
	for round := range rounds {
		for _, mode := range []string{"local", "on"} {
			prefix := filepath.Join(logDir, fmt.Sprintf("%s-%d", mode, round))
			out, err := run([]string{"-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", strconv.Itoa(seconds),
				"-l", "--log-prefix=" + prefix}, mode)
			if err != nil {
				b.Fatalf("pgbench (synchronous_commit=%s): %v\n%s", mode, err, out)
			}
			tps, err := pgbenchTPS(out)
			if err != nil {
				b.Fatal(err)
			}
			lat, err := pgbenchLatencies(prefix)
			if err != nil {
				b.Fatal(err)
			}
			r := results[mode]
			r.tps = append(r.tps, tps)
			r.latencies = append(r.latencies, lat...)
		}
	}
	report := func(mode, label string) float64 {
		r := results[mode]
		var sum float64
		for _, v := range r.tps {
			sum += v
		}
		tps := sum / float64(len(r.tps))
		slices.Sort(r.latencies)
		p := func(q float64) float64 { return r.latencies[int(q*float64(len(r.latencies)-1))] }
		b.ReportMetric(tps, "tps_"+label)
		b.ReportMetric(p(0.50), "p50_ms_"+label)
		b.ReportMetric(p(0.95), "p95_ms_"+label)
		b.ReportMetric(p(0.99), "p99_ms_"+label)
		b.Logf("%-12s tps %7.0f (rounds %v)  latency p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  (%d transactions)",
			label, tps, roundAll(r.tps), p(0.50), p(0.95), p(0.99), len(r.latencies))
		return tps
	}
	without := report("local", "without_gate")
	with := report("on", "with_gate")
	b.ReportMetric(100*(without-with)/without, "tps_cost_%")
	b.Logf("pgbench TPC-B-like, scale 4, %d clients, %d × %d s each, alternating; the gate costs %.1f%% of TPS",
		clients, rounds, seconds, 100*(without-with)/without)
}

func roundAll(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchTPS reads the throughput pgbench printed.
func pgbenchTPS(out string) (float64, error) {
	m := tpsLine.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no tps in pgbench's output:\n%s", out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// pgbenchLatencies reads every transaction's latency, in milliseconds, from
// the per-transaction logs pgbench -l wrote under prefix (one file per
// thread; the third field is the latency in microseconds).
func pgbenchLatencies(prefix string) ([]float64, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no pgbench logs under %s", prefix)
	}
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		s := bufio.NewScanner(fh)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 3 {
				continue
			}
			us, err := strconv.ParseFloat(fields[2], 64)
			if err != nil {
				continue
			}
			lat = append(lat, us/1000)
		}
		_ = fh.Close()
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("empty pgbench logs under %s", prefix)
	}
	return lat, nil
}
