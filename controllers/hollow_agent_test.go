package controllers

import (
	"context"
	"crypto/x509"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// hollowAgents stand in for the agents of envtest pods, which run no
// processes: each follows the Lease and its pod's labels through the API
// server as the real agent does (renews while it leads, seals when the
// epoch is sealed, hands over when asked, releases when its PostgreSQL
// "dies"), and serves a /status with positions the test chooses. The
// operator reads them through the AgentReader seam.
type hollowAgents struct {
	mu     sync.Mutex
	agents map[string]*hollowAgent // by namespace/pod
}

var hollow = &hollowAgents{agents: map[string]*hollowAgent{}}

// Status implements AgentReader.
func (h *hollowAgents) Status(_ context.Context, pod *corev1.Pod, _ *x509.CertPool) (*api.Status, error) {
	h.mu.Lock()
	a := h.agents[pod.Namespace+"/"+pod.Name]
	h.mu.Unlock()
	if a == nil {
		return nil, errors.New("no agent")
	}
	return a.status()
}

type hollowAgent struct {
	ns, pod string

	mu sync.Mutex
	// lsn is the position the agent reports (written as leader, received
	// as follower); frozen makes it silent and stops its renewals;
	// crashed makes a leader release the Lease as after PostgreSQL died.
	lsn     uint64
	frozen  bool
	crashed bool
	st      api.Status
	// writing moves lsn forward on every pass, as writes would; reads
	// counts the operator's reads of /status.
	writing bool
	reads   int
	// reason is the Reason the agent reports.
	reason string
	// diskUsed and diskTotal are the data volume's, in bytes.
	diskUsed, diskTotal int64
	// backupFails makes the backups the operator asks for fail; backup
	// is the last one asked for.
	backupFails string
	backup      *api.BackupProgress
}

// startHollowAgent runs an agent for pod until the test ends.
func startHollowAgent(t *testing.T, ns, pod string, lsn uint64) *hollowAgent {
	t.Helper()
	a := &hollowAgent{ns: ns, pod: pod, lsn: lsn}
	hollow.mu.Lock()
	hollow.agents[ns+"/"+pod] = a
	hollow.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		hollow.mu.Lock()
		delete(hollow.agents, ns+"/"+pod)
		hollow.mu.Unlock()
	})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			a.pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return a
}

func (a *hollowAgent) set(f func(a *hollowAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *hollowAgent) status() (*api.Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reads++
	if a.frozen {
		return nil, errors.New("frozen")
	}
	st := a.st
	return &st, nil
}

func (a *hollowAgent) pass(ctx context.Context) {
	a.mu.Lock()
	if a.writing {
		a.lsn += 0x100
	}
	frozen, crashed, at, reason, used, total := a.frozen, a.crashed, lsn.LSN(a.lsn), a.reason, a.diskUsed, a.diskTotal
	a.mu.Unlock()
	if frozen {
		return
	}
	key := client.ObjectKey{Namespace: a.ns, Name: names.Lease("db")}
	lease := &coordinationv1.Lease{}
	pod := &corev1.Pod{}
	if k8s.Get(ctx, key, lease) != nil || k8s.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.pod}, pod) != nil ||
		lease.Spec.LeaseTransitions == nil {
		return
	}
	now := time.Now()
	epoch := int64(*lease.Spec.LeaseTransitions)
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	proto := leadership.Of(lease)
	sealed := proto.Sealed()
	leads := holder == a.pod && pod.Labels[names.LabelRole] == names.RoleLeader &&
		pod.Labels[names.LabelEpoch] == strconv.FormatInt(epoch, 10) && !sealed
	st := api.Status{Pod: a.pod, Epoch: epoch, Leader: holder, Running: true, Timeline: 1, SinceAPIContact: &metav1.Duration{}, Reason: reason,
		DiskUsedBytes: used, DiskTotalBytes: total}
	switch {
	case holder == a.pod && (crashed || proto.SwitchoverTo != ""):
		// PostgreSQL died, or a clean stop for a handover: release.
		l := lease.DeepCopy()
		proto.Holder, proto.ReleasedBy, proto.ReleasedLSN = "", a.pod, 0
		if !crashed {
			proto.ReleasedLSN = at
		}
		leadership.Encode(proto, l)
		_ = k8s.Update(ctx, l)
		st.Mode, st.Running = api.ModeFollower, false
	case leads && !crashed:
		l := lease.DeepCopy()
		renewed := metav1.NewMicroTime(now)
		l.Spec.RenewTime = &renewed
		leadership.SetLeaderPosition(l, epoch, at)
		_ = k8s.Update(ctx, l)
		st.Mode, st.WriteLSN = api.ModeLeader, at
		st.SynchronousStandbyNames = proto.Standbys.String()
	case crashed:
		st.Mode, st.Running = api.ModeFollower, false
	default:
		st.Mode, st.InRecovery, st.Streaming = api.ModeFollower, true, !sealed && holder != ""
		st.ReceivedLSN, st.ReplayedLSN = at, at
		if sealed {
			st.Sealed, st.SealedLSN = true, at
		}
	}
	// A backup the operator asked for on this pod completes (or fails)
	// on the next pass, as a real agent's would after a while.
	a.mu.Lock()
	if id := pod.Annotations[names.AnnotationBackup]; id != "" && (a.backup == nil || a.backup.ID != id) {
		ended := now.UTC()
		a.backup = &api.BackupProgress{ID: id, Phase: api.BackupCompleted, Bytes: 1 << 20, StoredBytes: 1 << 18, Timeline: 1,
			StartLSN: 0x2000028, EndLSN: at, FromStandby: st.Mode == api.ModeFollower, StartedAt: ended, EndedAt: &ended}
		if a.backupFails != "" {
			a.backup.Phase, a.backup.Error = api.BackupFailed, a.backupFails
		}
	}
	st.Backup = a.backup
	a.st = st
	a.mu.Unlock()
}
