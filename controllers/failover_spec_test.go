package controllers

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
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
