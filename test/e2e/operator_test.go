package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/regent-dev/regent/internal/waitfor"
)

// The chart runs two operators, one active: when the active one crashes,
// the standby takes over within the election's lease (4 s); when it stops
// cleanly, at once. (No failover happens while no operator is active, so
// this hand-over adds to a failover's time when both fail together.)
func TestTheStandbyOperatorTakesOver(t *testing.T) {
	installOperator(t)
	const ons = "regent-system"
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
	active := func() (string, error) {
		l, err := cs.CoordinationV1().Leases(ons).Get(t.Context(), "regent-operator.regent.dev", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		pod, _, _ := strings.Cut(ptr.Deref(l.Spec.HolderIdentity, ""), "_")
		return pod, nil
	}
	var first string
	waitfor.Condition(t, time.Minute, "an active operator", func() (err error) {
		first, err = active()
		if err == nil && first == "" {
			err = fmt.Errorf("no holder")
		}
		return err
	})
	handOver := func(from string) time.Duration {
		t.Helper()
		at := time.Now()
		waitfor.Condition(t, 30*time.Second, "another operator active", func() error {
			now, err := active()
			if err != nil {
				return err
			}
			if now == "" || now == from {
				return fmt.Errorf("still %q", now)
			}
			return nil
		})
		return time.Since(at)
	}

	// A crash: every process of the active operator's pod killed.
	podGroupIn(t, ons, first).kill(t)
	crash := handOver(first)
	second, _ := active()
	// A clean stop: the pod deleted, the lease released on the way out.
	kubectl(t, "-n", ons, "delete", "pod", second, "--wait=false")
	clean := handOver(second)
	t.Logf("operator hand-over: after a crash %s (%s → %s), after a clean stop %s", crash.Round(100*time.Millisecond),
		first, second, clean.Round(100*time.Millisecond))
	if crash > 10*time.Second {
		t.Errorf("the standby took %s to take over from a crashed operator; the lease is 4 s", crash)
	}
	if clean > 5*time.Second {
		t.Errorf("the standby took %s to take over from an operator that stopped cleanly", clean)
	}
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
}
