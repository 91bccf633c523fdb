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
// another operator holds the election within its lease (4 s): the standby,
// or the crashed one's container restarted in place by the kubelet,
// whichever asks first once the lease expired; when it stops cleanly (its
// pod deleted), the standby at once. (No failover happens while no
// operator is active, so this hand-over adds to a failover's time when
// both fail together: TestTheLeaderAndTheActiveOperatorLostTogether.)
func TestTheStandbyOperatorTakesOver(t *testing.T) {
	installOperator(t)
	const ons = "regent-system"
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
	// The holder is "<pod>_<process>": a process restarted in its pod
	// is another holder.
	active := func() (string, error) {
		l, err := cs.CoordinationV1().Leases(ons).Get(t.Context(), "regent-operator.regent.dev", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return ptr.Deref(l.Spec.HolderIdentity, ""), nil
	}
	pod := func(holder string) string { p, _, _ := strings.Cut(holder, "_"); return p }
	var first string
	waitfor.Condition(t, time.Minute, "an active operator", func() (err error) {
		first, err = active()
		if err == nil && first == "" {
			err = fmt.Errorf("no holder")
		}
		return err
	})
	handOver := func(from string) (string, time.Duration) {
		t.Helper()
		at := time.Now()
		var now string
		waitfor.Condition(t, 30*time.Second, "another operator active", func() (err error) {
			if now, err = active(); err != nil {
				return err
			}
			if now == "" || now == from {
				return fmt.Errorf("still %q", now)
			}
			return nil
		})
		return now, time.Since(at)
	}

	// A crash: every process of the active operator's pod killed.
	podGroupIn(t, ons, pod(first)).kill(t)
	second, crash := handOver(first)
	// A clean stop: the pod deleted, the lease released on the way out;
	// the other pod takes over.
	kubectl(t, "-n", ons, "delete", "pod", pod(second), "--wait=false")
	third, clean := handOver(second)
	if pod(third) == pod(second) {
		t.Errorf("the deleted operator pod %s holds the election again", pod(second))
	}
	t.Logf("operator hand-over: after a crash %s (%s → %s), after a clean stop %s (→ %s)", crash.Round(100*time.Millisecond),
		pod(first), pod(second), clean.Round(100*time.Millisecond), pod(third))
	if crash > 10*time.Second {
		t.Errorf("no operator held the election %s after the active one crashed; the lease is 4 s", crash)
	}
	if clean > 5*time.Second {
		t.Errorf("the standby took %s to take over from an operator that stopped cleanly", clean)
	}
	kubectl(t, "-n", ons, "rollout", "status", "deployment/regent-regent", "--timeout=2m")
}
