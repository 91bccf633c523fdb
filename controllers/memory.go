package controllers

import (
	"fmt"
	"maps"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/backup"
)

// memory is what the operator remembers between passes, by its own clock.
// Lost on restart, which is safe: every entry then starts afresh (a full
// lease duration is waited again; delaySeconds restarts).
type memory struct {
	mu       sync.Mutex
	clusters map[types.NamespacedName]*clusterMemory
}

type clusterMemory struct {
	// storeRead is when the operator last read the cluster's object
	// store, storeBackups how many Backups the cluster had then, and
	// storeManifests the backups it held (retention.go).
	storeRead      time.Time
	storeBackups   int
	storeManifests []backup.Manifest
	// renewKey identifies the Lease renewal last seen, renewSeen when.
	renewKey  string
	renewSeen time.Time
	// lostEpoch is the epoch whose leader was first seen released or
	// terminated at lostSince.
	lostEpoch int64
	lostSince time.Time
	// leaderEpoch and leaderLSN: the leader's last reported position.
	leaderEpoch int64
	leaderLSN   lsn.LSN
	// sealSeen: when this operator sealed sealSeenEpoch, or first saw it
	// sealed.
	sealSeenEpoch int64
	sealSeen      time.Time
	// holder and holderEpoch: the Lease holder last seen.
	holder      string
	holderEpoch int64
	// silent are the pods whose agents did not answer last time.
	silent map[string]bool
	// lastWarning avoids repeating the same Warning event every pass.
	lastWarning string
	// unstanding: when this operator first saw each follower unable to
	// confirm commits (its pod missing, or not ready and not streaming in
	// the epoch), by its own clock; a follower seen standing leaves it.
	unstanding map[string]time.Time
	// filling: the members whose volumes were last seen filling, so
	// that the Warning is sent when it starts, not every pass.
	filling string
	// startFailures: each member's last start failure warned of, so that
	// a new reason is warned of once.
	startFailures map[string]string
	// reclones: each member's count of new clones last seen.
	reclones map[string]int64
	// failsafeClear: for failsafeEpoch, when each member's last
	// confirmation of the leader's failsafe expires at the latest, by
	// this operator's clock (the earliest of its estimates, each late).
	failsafeEpoch int64
	failsafeClear map[string]time.Time
}

// noteFailsafeClear records, for a member that reported epoch revoked (or
// whose node reported its containers terminated), the latest moment its
// last confirmation of the leader's failsafe can expire, and returns the
// earliest such estimate (zero: none yet). The agent's age of its last
// confirmation is placed at answered, after its answer arrived; a
// termination at now, after the node reported it.
func (c *clusterMemory) noteFailsafeClear(pod string, epoch int64, m failover.Member, now, answered time.Time) time.Time {
	if c.failsafeEpoch != epoch {
		c.failsafeEpoch, c.failsafeClear = epoch, map[string]time.Time{}
	}
	var t time.Time
	switch a := m.Agent; {
	case m.ContainersTerminated:
		t = now.Add(failover.FailsafeTTL)
	case a != nil && a.RevokedEpoch >= epoch && a.SinceConfirmed != nil:
		t = answered.Add(-a.SinceConfirmed.Duration).Add(failover.FailsafeTTL)
	}
	if prev, ok := c.failsafeClear[pod]; !t.IsZero() && (!ok || t.Before(prev)) {
		c.failsafeClear[pod] = t
	}
	return c.failsafeClear[pod]
}

// noteStanding records which of the pods the spec asks for stand (see
// followerStands) by this operator's clock and returns since when each
// that does not has been seen so. The leader is kept too: once deposed it
// is a follower whose absence has been seen for as long as it has. Nothing the pods carry (a Ready
// condition's transition time, a creation time) counts: a follower that
// stopped right after the operator first saw it stand must still be seen
// gone for a whole grace before a Preferred quorum leaves it out.
func (c *clusterMemory) noteStanding(rs *regentv1.ReplicaSet, obs *observation, now time.Time) map[string]time.Time {
	seen := map[string]time.Time{}
	for i := range int(rs.DesiredReplicas()) {
		pod := names.Pod(rs.Name, i)
		if followerStands(obs, pod) {
			continue
		}
		since, ok := c.unstanding[pod]
		if !ok {
			since = now
		}
		seen[pod] = since
	}
	c.unstanding = seen
	return maps.Clone(seen)
}

// noteRenewal records, for the cluster key, when the operator first saw the
// Lease's current renewal. A cluster not remembered (never passed, or
// forgotten with its ReplicaSet: its Lease is kept with the data) stays so;
// its first pass notes the renewal itself.
func (m *memory) noteRenewal(key types.NamespacedName, lease *coordinationv1.Lease, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.clusters[key]; ok {
		c.noteRenewal(lease, now)
	}
}

// noteRenewalSeen records a renewal like noteRenewal, remembering the
// cluster if it was not (a standby operator's memory, see renewalWatch).
func (m *memory) noteRenewalSeen(key types.NamespacedName, lease *coordinationv1.Lease, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.get(key).noteRenewal(lease, now)
}

func (c *clusterMemory) noteRenewal(lease *coordinationv1.Lease, now time.Time) {
	key := fmt.Sprintf("%s/%d/", ptr.Deref(lease.Spec.HolderIdentity, ""), ptr.Deref(lease.Spec.LeaseTransitions, 0))
	if lease.Spec.RenewTime != nil {
		key += lease.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
	}
	if key != c.renewKey {
		c.renewKey, c.renewSeen = key, now
	}
}

// restartClocks makes every cluster's last renewal count as seen at now
// (see apiContact).
func (m *memory) restartClocks(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.clusters {
		if c.renewSeen.Before(now) {
			c.renewSeen = now
		}
	}
}

// forget drops what the operator remembers of a cluster whose ReplicaSet is
// gone (a ReplicaSet of the same name later starts afresh, which only waits
// longer).
func (m *memory) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.clusters, key)
}

// remembers says whether the operator holds anything of a cluster.
func (m *memory) remembers(key types.NamespacedName) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.clusters[key]
	return ok
}

func (m *memory) get(key types.NamespacedName) *clusterMemory {
	if m.clusters == nil {
		m.clusters = map[types.NamespacedName]*clusterMemory{}
	}
	c, ok := m.clusters[key]
	if !ok {
		c = &clusterMemory{}
		m.clusters[key] = c
	}
	return c
}
