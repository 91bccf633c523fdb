package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/waitfor"
)

// kubectl apply of an invalid ReplicaSet is refused by the API server with
// the CRD's own messages, before anything exists: no crash loop, no half
// cluster.
func TestKubectlApplyOfAnInvalidReplicaSetIsRefused(t *testing.T) {
	installOperator(t)
	const vns = "e2e-invalid"
	createNamespace(t, vns)
	out, err := toolResult(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: bad
spec:
  replicas: 12
  replication:
    mode: Sync
    syncReplicas: 3
  postgres:
    parameters:
      listen_addresses: "*"
`, "kubectl", "-n", vns, "apply", "-f", "-")
	if err == nil {
		t.Fatalf("kubectl applied an invalid ReplicaSet:\n%s", out)
	}
	t.Logf("kubectl apply:\n%s", out)
	for _, want := range []string{
		"replicas must be between 1 and 9",
		"listen_addresses is managed by Regent and cannot be set",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl's error does not say %q", want)
		}
	}
	if got := kubectl(t, "-n", vns, "get", "dbrs,statefulsets", "-o", "name"); strings.TrimSpace(got) != "" {
		t.Errorf("objects exist after the refusal: %s", got)
	}
}

// A parameter PostgreSQL refuses passes the CRD (its values are
// PostgreSQL's to judge) and stops the start: PostgreSQL's own line naming
// it is in kubectl logs, the ReplicaSet's status and a Warning event say
// why, and the start is retried at a growing interval, not in a tight
// loop. Fixing the spec heals the cluster without touching a pod.
func TestABadParameterIsNamedAndHealsOnceFixed(t *testing.T) {
	installOperator(t)
	const bns = "e2e-bad-parameter"
	createNamespace(t, bns)
	tool(t, `apiVersion: regent.dev/v1alpha1
kind: ReplicaSet
metadata:
  name: db
spec:
  replicas: 1
  storage:
    size: 1Gi
  postgres:
    parameters:
      shared_buffers: lots
`, "kubectl", "-n", bns, "apply", "-f", "-")
	const want = `invalid value for parameter "shared_buffers": "lots"`
	waitfor.Condition(t, 3*time.Minute, "kubectl logs naming the parameter", func() error {
		out, err := toolResult(t, "", "kubectl", "-n", bns, "logs", "db-0", "-c", "postgres")
		if err != nil {
			return fmt.Errorf("kubectl logs db-0 -c postgres: %w\n%s", err, lastLines(out, 5))
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("kubectl logs db-0 -c postgres does not say it yet:\n%s", lastLines(out, 5))
		}
		return nil
	})
	// The status quotes it, from the agent.
	waitfor.Condition(t, time.Minute, "the status naming the parameter", func() error {
		msg := fieldIn(t, bns, `.status.conditions[?(@.type=="Available")].message`)
		if !strings.Contains(msg, want) {
			return fmt.Errorf("Available: %q", msg)
		}
		return nil
	})
	t.Logf("Available: %s", fieldIn(t, bns, `.status.conditions[?(@.type=="Available")].message`))
	// The failed starts are spaced out (1 s, 2 s, 4 s … at most 20 s),
	// not repeated as fast as PostgreSQL exits.
	time.Sleep(20 * time.Second)
	out := kubectl(t, "-n", bns, "logs", "db-0", "-c", "postgres")
	starts := grepLines(out, want)
	t.Logf("kubectl logs db-0 -c postgres | grep shared_buffers:\n%s", starts)
	if starts == "" {
		t.Errorf("the log no longer says it:\n%s\n%s", lastLines(out, 20), kubectl(t, "-n", bns, "get", "pods,events"))
	}
	if n := strings.Count(starts, "\n") + 1; n > 10 {
		t.Errorf("%d failed starts in about 20 s: the start is retried without a pause", n)
	}
	if events := kubectl(t, "-n", bns, "get", "events", "--field-selector", "reason="+regentv1.EventStartFailed,
		"-o", "jsonpath={.items[*].message}"); !strings.Contains(events, want) {
		t.Errorf("no StartFailed event naming the parameter: %q", events)
	}

	// The fix alone heals it: the pod that cannot run is restarted onto
	// the new template at once.
	fixed := time.Now()
	kubectl(t, "-n", bns, "patch", "dbrs/db", "--type=merge", "-p", `{"spec":{"postgres":{"parameters":{"shared_buffers":"64MB"}}}}`)
	kubectl(t, "-n", bns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=3m")
	t.Logf("Healthy %s after the fix", time.Since(fixed).Round(100*time.Millisecond))
	kubectl(t, "delete", "namespace", bns, "--wait=false")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, substr) {
			out = append(out, strings.TrimRight(l, "\n"))
		}
	}
	return strings.Join(out, "\n")
}
