package e2e_test

import (
	"strings"
	"testing"
)

// kubectl apply of an invalid ReplicaSet is refused by the API server with
// the CRD's own messages, before anything exists: no crash loop, no half
// cluster.
func TestKubectlApplyOfAnInvalidReplicaSetIsRefused(t *testing.T) {
	installOperator(t)
	const vns = "e2e-invalid"
	kubectl(t, "create", "namespace", vns)
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
