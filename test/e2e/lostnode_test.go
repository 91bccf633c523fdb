package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/kubelet"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// The leader's node stops reporting for 90 s (its kubelet cut off from the
// API server, its pods healthy and its agent still renewing): the node
// controller marks the leader's pod not ready, so no Service routes to it.
// The operator switches over to a follower on a node that reports: writes
// are back within lease + 2 s of the pod being marked, nothing
// acknowledged is lost, and once the node reports again the old leader is
// a ready follower.
func TestALeaderOnANodeThatStopsReportingIsMoved(t *testing.T) {
	const lns = "e2e-lostnode"
	const lease = 6 * time.Second
	createHealthyCluster(t, lns, "mode: Async")
	dropWhenDone(t, lns)
	w := startWriter(t, lns)
	w.waitWriting(t)
	old, epoch := fieldIn(t, lns, ".status.leader"), fieldIn(t, lns, ".status.epoch")
	pod, err := cs.CoreV1().Pods(lns).Get(t.Context(), old, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := pod.Spec.NodeName
	paused := kubelet.HeartbeatPausedFile(filepath.Join(cfg.StateDir, "nodes", node))
	if err := os.WriteFile(paused, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { _ = os.Remove(paused) })

	waitfor.Condition(t, 3*time.Minute, "the node controller marks "+old+" not ready", func() error {
		p, err := cs.CoreV1().Pods(lns).Get(t.Context(), old, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", p.Status.Conditions)
	})
	marked := time.Now()
	now, elected := awaitNewLeader(t, lns, old, epoch, lease+30*time.Second)
	w.waitWroteAfter(t, elected)
	back := w.firstAfter(elected).Sub(marked)
	gap, _ := w.outage(marked, elected)
	newPod, err := cs.CoreV1().Pods(lns).Get(t.Context(), now, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s's node %s stopped reporting; marked not ready after %s; %s (on %s) leads, writes back %s after the marking (longest write gap %s)",
		old, node, marked.Sub(stopped).Round(time.Second), now, newPod.Spec.NodeName, back.Round(100*time.Millisecond), gap.Round(100*time.Millisecond))
	if newPod.Spec.NodeName == node {
		t.Errorf("the new leader %s is on the node that stopped reporting", now)
	}
	if back > lease+2*time.Second {
		t.Errorf("writes came back %s after the leader was marked not ready; want within lease + 2 s (%s)", back, lease+2*time.Second)
	}
	if out := kubectl(t, "-n", lns, "get", "events", "--field-selector", "reason=LeaderUnserved", "-o", "name"); out == "" {
		t.Error("no LeaderUnserved event")
	}

	// The node reports again after 90 s: the old leader is a ready follower.
	time.Sleep(time.Until(stopped.Add(90 * time.Second)))
	if err := os.Remove(paused); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", lns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=3m")
	kubectl(t, "-n", lns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=2m")
	p, err := cs.CoreV1().Pods(lns).Get(t.Context(), old, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels[names.LabelRole] != names.RoleFollower {
		t.Errorf("%s is %q after its node came back, want a follower", old, p.Labels[names.LabelRole])
	}
	// Async, and a clean handover: every acknowledged row is on the leader.
	w.checkAllOn(t, lns, fieldIn(t, lns, ".status.leader"))
}

// firstAfter is the first acknowledged row written after t.
func (w *writer) firstAfter(t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	at := slices.Clone(w.at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	for _, a := range at {
		if a.After(t) {
			return a
		}
	}
	return time.Time{}
}
