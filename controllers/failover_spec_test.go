package controllers

import (
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// The leader fences at 2/3 of the duration on the Lease: a lease shortened
// in the spec must not make the operator expire it sooner (it could still
// write), while a lengthened one is waited for at once.
func TestFailoverWaitsForTheLongerOfTheSpecsAndTheLeasesDuration(t *testing.T) {
	for _, tc := range []struct {
		spec, lease int32
		want        time.Duration
	}{
		{spec: 3, lease: 10, want: 10 * time.Second},
		{spec: 20, lease: 10, want: 20 * time.Second},
		{spec: 10, lease: 10, want: 10 * time.Second},
	} {
		rs := &regentv1.ReplicaSet{}
		rs.Spec.Failover.LeaseDurationSeconds = ptr.To(tc.spec)
		lease := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To(tc.lease)}}
		if got := failoverSpec(rs, lease).LeaseDuration; got != tc.want {
			t.Errorf("spec %ds, Lease %ds: the operator waits %s, want %s", tc.spec, tc.lease, got, tc.want)
		}
	}
}

// The election reads the acknowledgement rules back from the Lease: what
// the operator writes must parse into the pods it names.
func TestParseQuorumReadsWhatTheOperatorWrites(t *testing.T) {
	rs := &regentv1.ReplicaSet{}
	rs.Name = "db"
	rs.Spec.Replicas = ptr.To[int32](4)
	rs.Spec.Replication.Mode = regentv1.ReplicationSync
	rs.Spec.Replication.SyncReplicas = ptr.To[int32](2)
	written := syncStandbyNames(rs, nil, "db-1")
	q, ok := parseQuorum(written)
	if !ok || q.K != 2 || !slices.Equal(q.Members, []string{"db-0", "db-2", "db-3"}) {
		t.Errorf("%q parsed as %+v, %v", written, q, ok)
	}
	for _, s := range []string{"", names.CommitGateStandbys, "ANY x (\"a\")", "ANY 1 ()"} {
		if _, ok := parseQuorum(s); ok {
			t.Errorf("%q parsed as a quorum", s)
		}
	}
}
