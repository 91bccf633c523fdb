package e2e_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
)

// BenchmarkApplyToReady measures how long `kubectl apply` of the sample
// ReplicaSet (3 pods, 1 Gi, make demo's) takes to give 3 ready replicas
// and a Healthy phase, each run in a new namespace deleted (and waited for)
// before the next. Issue 20's goal: under 20 s. The first pod ready (the
// leader after initdb) is reported too.
//
// REGENT_BENCH_APPLIES sets the runs (5).
func BenchmarkApplyToReady(b *testing.B) {
	runs := countFromEnv(b, "REGENT_BENCH_APPLIES", 5)
	sample, err := os.ReadFile("../../config/samples/regent_v1alpha1_replicaset.yaml")
	if err != nil {
		b.Fatal(err)
	}
	installOperator(b)
	var ready, first []time.Duration
	for i := range runs {
		ns := fmt.Sprintf("bench-apply-%d", i)
		createNamespace(b, ns)
		start := time.Now()
		tool(b, string(sample), "kubectl", "-n", ns, "apply", "-f", "-")
		var firstAt time.Time
		waitfor.Condition(b, 3*time.Minute, "3 ready replicas and Healthy", func() error {
			st := strings.Fields(kubectl(b, "-n", ns, "get", "dbrs/pg", "-o", "jsonpath={.status.readyReplicas} {.status.phase}"))
			// readyReplicas is left out while 0: two fields means some are.
			if firstAt.IsZero() && len(st) == 2 && st[0] != "0" {
				firstAt = time.Now()
			}
			if len(st) != 2 || st[0] != "3" || st[1] != "Healthy" {
				return fmt.Errorf("status %v", st)
			}
			return nil
		})
		ready, first = append(ready, time.Since(start)), append(first, firstAt.Sub(start))
		b.Logf("run %d: 3 ready and Healthy %s after the apply (first ready %s)", i+1,
			ready[i].Round(time.Millisecond), first[i].Round(time.Millisecond))
		kubectl(b, "delete", "namespace", ns, "--timeout=3m")
	}
	p50, p95, worst := percentiles(ready)
	f50, f95, _ := percentiles(first)
	b.Logf("kubectl apply → 3 ready, %d runs: p50 %s, p95 %s, max %s (first pod ready p50 %s, p95 %s)", runs,
		p50.Round(time.Millisecond), p95.Round(time.Millisecond), worst.Round(time.Millisecond),
		f50.Round(time.Millisecond), f95.Round(time.Millisecond))
	b.ReportMetric(p50.Seconds(), "ready-p50-s")
	b.ReportMetric(p95.Seconds(), "ready-p95-s")
}
