package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/localcluster/kubelet"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// The leader and the active operator are lost together: their node goes
// dark (every process of both pods frozen, as a dead machine's, and the
// node's heartbeat stopped). The standby operator takes over (its election
// lease: 4 s) and fails over: a new leader writes within the lease + the
// hand-over + 2 s.
func TestTheLeaderAndTheActiveOperatorLostTogether(t *testing.T) {
	const tns = "e2e-together"
	const lease, handOver = 6 * time.Second, 4 * time.Second
	createHealthyCluster(t, tns, "mode: Async")
	dropWhenDone(t, tns)
	const ons = "regent-system"
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
	var operator string
	waitfor.Condition(t, time.Minute, "an active operator", func() error {
		l, err := cs.CoordinationV1().Leases(ons).Get(t.Context(), "regent-operator.regent.dev", metav1.GetOptions{})
		if err != nil {
			return err
		}
		operator, _, _ = strings.Cut(ptr.Deref(l.Spec.HolderIdentity, ""), "_")
		if operator == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	op, err := cs.CoreV1().Pods(ons).Get(t.Context(), operator, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := op.Spec.NodeName
	// The leader on the active operator's node.
	pods, err := cs.CoreV1().Pods(tns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	target := ""
	for _, p := range pods.Items {
		if p.Spec.NodeName == node {
			target = p.Name
		}
	}
	if target == "" {
		t.Fatalf("no pod of the cluster on %s, the active operator's node", node)
	}
	if fieldIn(t, tns, ".status.leader") != target {
		kubectl(t, "-n", tns, "annotate", "--overwrite", "dbrs/db", names.AnnotationSwitchoverTo+"="+target)
		waitfor.Condition(t, time.Minute, "the switchover to "+target, func() error {
			if l := fieldIn(t, tns, ".status.leader"); l != target {
				return fmt.Errorf("leader %q", l)
			}
			return nil
		})
		kubectl(t, "-n", tns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=2m")
	}
	w := startWriter(t, tns)
	w.waitWriting(t)
	epoch := fieldIn(t, tns, ".status.epoch")

	paused := kubelet.HeartbeatPausedFile(filepath.Join(cfg.StateDir, "nodes", node))
	leaderGroup, operatorGroup := podGroupIn(t, tns, target), podGroupIn(t, ons, operator)
	lost := time.Now()
	leaderGroup.freeze(t, true)
	operatorGroup.freeze(t, true)
	if err := os.WriteFile(paused, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(paused)
		leaderGroup.freeze(t, false)
		operatorGroup.freeze(t, false)
	})
	now, elected := awaitNewLeader(t, tns, target, epoch, 2*time.Minute)
	w.waitWroteAfter(t, elected)
	back := w.firstAfter(elected).Sub(lost)
	limit := lease + handOver + 2*time.Second
	t.Logf("%s (the leader) and %s (the active operator) lost together on %s: %s leads; writes back %s after (limit %s)",
		target, operator, node, now, back.Round(100*time.Millisecond), limit)
	if back > limit {
		t.Errorf("writes came back %s after the loss; want within lease + hand-over + 2 s (%s)", back, limit)
	}

	// The node back: the old leader rejoins, both operators run again.
	if err := os.Remove(paused); err != nil {
		t.Fatal(err)
	}
	leaderGroup.freeze(t, false)
	operatorGroup.freeze(t, false)
	kubectl(t, "-n", tns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=3m")
	kubectl(t, "-n", tns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=2m")
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
}
