package e2e_test

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// apiServerOutage is how long the failsafe tests keep the API server
// stopped: more than four leases (6 s here), so that without the failsafe
// the leader fences a few seconds in and writes stop until it is back.
const apiServerOutage = 25 * time.Second

// The API server stops (SIGSTOP: connections open, nothing answered) for
// 25 s under writes, in Async and then in Sync mode. The leader writes on
// through the outage on its followers' confirmations: no promotion, no
// acknowledged row lost, and no gap between acknowledged rows longer than
// a couple of seconds (it was the whole outage without the failsafe).
func TestWritesGoOnWhileTheAPIServerIsStopped(t *testing.T) {
	const fns = "e2e-failsafe"
	createHealthyCluster(t, fns, "mode: Async")
	w := startWriter(t, fns)
	for _, mode := range []string{"Async", "Sync"} {
		if mode == "Sync" {
			kubectl(t, "-n", fns, "patch", "dbrs/db", "--type=merge", "-p", `{"spec":{"replication":{"mode":"Sync","syncReplicas":1}}}`)
			waitfor.Condition(t, 2*time.Minute, "Sync mode in force", func() error {
				if got := fieldIn(t, fns, ".status.phase"); got != "Healthy" {
					return fmt.Errorf("phase %s", got)
				}
				l, err := cs.CoordinationV1().Leases(fns).Get(t.Context(), names.Lease("db"), metav1.GetOptions{})
				if err != nil {
					return err
				}
				if sb := leadership.Of(l).Standbys; sb.Kind != leadership.Quorum {
					return fmt.Errorf("synchronous standbys %q", sb.String())
				}
				return nil
			})
		}
		w.waitWriting(t)
		leader, epoch := fieldIn(t, fns, ".status.leader"), fieldIn(t, fns, ".status.epoch")
		stopped := time.Now()
		if err := cfg.Pause("kube-apiserver", true); err != nil {
			t.Fatal(err)
		}
		resume := func() {
			if err := cfg.Pause("kube-apiserver", false); err != nil {
				t.Error(err)
			}
		}
		t.Cleanup(resume)
		time.Sleep(apiServerOutage)
		resume()
		resumed := time.Now()
		w.waitWroteAfter(t, resumed)
		gap, _ := w.outage(stopped, resumed)
		t.Logf("%s: kube-apiserver stopped for %s under writes: longest gap between acknowledged rows %s",
			mode, apiServerOutage, gap.Round(time.Millisecond))
		if gap > 2*time.Second {
			t.Errorf("%s: writes stopped for %s during the API server's outage; want them to go on (failsafe)", mode, gap)
		}
		kubectl(t, "-n", fns, "wait", "dbrs/db", "--for=jsonpath={.status.phase}=Healthy", "--timeout=2m")
		if l, e := fieldIn(t, fns, ".status.leader"), fieldIn(t, fns, ".status.epoch"); l != leader || e != epoch {
			t.Errorf("%s: leadership moved during the outage: %s at epoch %s, then %s at epoch %s", mode, leader, epoch, l, e)
		}
		w.checkAllOn(t, fns, leader)
	}
}
