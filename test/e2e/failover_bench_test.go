package e2e_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/names"
)

// BenchmarkFailoverOutage measures the write outage, through the leader
// Service, of each way leadership moves (issue 20's table): a switchover,
// the leader's pod deleted, its PostgreSQL killed, and the whole pod
// frozen past its lease. Async, lease 10 s (make demo's sample cluster),
// one writer inserting back to back. Before each run the cluster is
// Healthy and the leader has not been killed for crashLoopQuiet, so every
// number is a first failure, not a crash loop's.
//
// REGENT_BENCH_FAILOVERS sets the runs of each kind (6);
// REGENT_BENCH_FAULTS, a comma-separated list of units (switchover, delete,
// kill, freeze), the kinds run (all).
func BenchmarkFailoverOutage(b *testing.B) {
	runs := countFromEnv(b, "REGENT_BENCH_FAILOVERS", 6)
	only := strings.FieldsFunc(os.Getenv("REGENT_BENCH_FAULTS"), func(r rune) bool { return r == ',' })
	const bns = "bench-failover"
	const lease = 10 * time.Second
	installOperator(b)
	createNamespace(b, bns)
	tool(b, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: db
spec:
  replicas: 3
  storage:
    size: 1Gi
  failover:
    leaseDurationSeconds: 10
`, "kubectl", "-n", bns, "apply", "-f", "-")
	kubectl(b, "-n", bns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=5m")
	w := startWriter(b, bns)

	lastKill := map[string]time.Time{}
	var frozen group
	faults := []struct {
		name, unit string
		do         func(leader string)
		after      func()
	}{
		{"switchover", "switchover", func(leader string) {
			target := "db-0"
			for _, m := range []string{"db-0", "db-1", "db-2"} {
				if m != leader {
					target = m
				}
			}
			kubectl(b, "-n", bns, "annotate", "--overwrite", "dbrs/db", names.AnnotationSwitchoverTo+"="+target)
		}, nil},
		{"pod deleted", "delete", func(leader string) {
			kubectl(b, "-n", bns, "delete", "pod", leader, "--wait=false")
		}, nil},
		{"PostgreSQL killed", "kill", func(leader string) {
			podGroupIn(b, bns, leader).sub("postgres").kill(b)
			lastKill[leader] = time.Now()
		}, nil},
		{"whole pod frozen", "freeze", func(leader string) {
			frozen = podGroupIn(b, bns, leader)
			frozen.freeze(b, true)
		}, func() { frozen.freeze(b, false) }},
	}
	var summary []string
	for _, f := range faults {
		if len(only) > 0 && !slices.Contains(only, f.unit) {
			continue
		}
		var outages, ackOutages []time.Duration
		for i := range runs {
			leader := restartTarget(b, bns, w, lastKill)
			epoch := fieldIn(b, bns, ".status.epoch")
			at := time.Now()
			f.do(leader)
			now, elected := awaitNewLeader(b, bns, leader, epoch, lease+time.Minute)
			if f.after != nil {
				f.after()
			}
			w.waitWroteAfter(b, elected)
			gap, _ := w.outage(at, time.Now())
			ackGap, _ := w.ackOutage(at, time.Now())
			outages, ackOutages = append(outages, gap), append(ackOutages, ackGap)
			b.Logf("%s, run %d: %s; by the acknowledgements %s (%s → %s)", f.name, i+1, gap.Round(time.Millisecond),
				ackGap.Round(time.Millisecond), leader, now)
		}
		p50, p95, worst := percentiles(outages)
		a50, a95, _ := percentiles(ackOutages)
		summary = append(summary, fmt.Sprintf("%-18s %2d runs: write outage p50 %s, p95 %s, max %s; by the acknowledgements p50 %s, p95 %s",
			f.name, runs, p50.Round(time.Millisecond), p95.Round(time.Millisecond), worst.Round(time.Millisecond),
			a50.Round(time.Millisecond), a95.Round(time.Millisecond)))
		b.ReportMetric(p50.Seconds(), f.unit+"-p50-s")
		b.ReportMetric(p95.Seconds(), f.unit+"-p95-s")
	}
	b.Logf("failovers, Async, lease 10 s, one writer through db-leader:\n%s", strings.Join(summary, "\n"))
}
