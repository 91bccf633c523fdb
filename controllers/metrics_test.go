package controllers

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

// podsWithSeries lists the pods of namespace that c has a series for.
func podsWithSeries(t *testing.T, c prometheus.Collector, namespace string) []string {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	go func() { c.Collect(ch); close(ch) }()
	var pods []string
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == namespace {
			pods = append(pods, labels["pod"])
		}
	}
	slices.Sort(pods)
	return pods
}

// A member's series go with it: a new leader's lag series (it has no lag),
// and every series of a member scaled away; a deleted cluster's go too.
func TestMemberSeriesGoWithTheirMember(t *testing.T) {
	const namespace = "metrics-test"
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "db"},
		Spec: regentv1.ReplicaSetSpec{Replicas: ptr.To(int32(3))}}
	members := func(n, leader int) []regentv1.MemberStatus {
		var out []regentv1.MemberStatus
		for i := range n {
			m := regentv1.MemberStatus{Name: []string{"db-0", "db-1", "db-2"}[i], Role: regentv1.RoleFollower,
				LagBytes: ptr.To(int64(10 * (i + 1))), DiskUsedBytes: ptr.To(int64(1 << 20)), DiskCapacityBytes: ptr.To(int64(1 << 30))}
			if i == leader {
				m.Role, m.LagBytes = regentv1.RoleLeader, nil
			}
			out = append(out, m)
		}
		return out
	}
	check := func(what string, c prometheus.Collector, want ...string) {
		t.Helper()
		if got := podsWithSeries(t, c, namespace); !slices.Equal(got, want) {
			t.Errorf("%s: series of %v, want %v", what, got, want)
		}
	}

	rs.Status.Members = members(3, 0)
	for _, pod := range []string{"db-0", "db-1", "db-2"} {
		certificateExpiry.WithLabelValues(namespace, "db", pod).Set(1)
	}
	recordMetrics(rs, &observation{})
	check("lag, db-0 leading", memberLagBytes, "db-1", "db-2")
	check("disk used", memberDiskUsedBytes, "db-0", "db-1", "db-2")
	if got := testutil.ToFloat64(maxLagBytesGauge.WithLabelValues(namespace, "db")); got != 1<<20 {
		t.Errorf("regent_max_lag_bytes %v, want the default 1 MiB", got)
	}

	rs.Status.Members = members(3, 1) // a failover to db-1
	recordMetrics(rs, &observation{})
	check("lag, db-1 leading", memberLagBytes, "db-0", "db-2")

	rs.Spec.Replicas = ptr.To(int32(2)) // scaled to 2: db-2 leaves
	rs.Status.Members = members(2, 1)
	recordMetrics(rs, &observation{})
	check("lag after the scale-down", memberLagBytes, "db-0")
	check("disk used after the scale-down", memberDiskUsedBytes, "db-0", "db-1")
	check("disk capacity after the scale-down", memberDiskCapacityBytes, "db-0", "db-1")
	check("certificate expiry after the scale-down", certificateExpiry, "db-0", "db-1")

	// A member of the spec that does not report (its pod starting) keeps
	// its certificate's series.
	rs.Status.Members = members(1, 0)
	recordMetrics(rs, &observation{})
	check("certificate expiry of a member not reporting", certificateExpiry, "db-0", "db-1")

	forgetMetrics(types.NamespacedName{Namespace: namespace, Name: "db"})
	for _, c := range []prometheus.Collector{memberLagBytes, memberDiskUsedBytes, memberDiskCapacityBytes, certificateExpiry, epochGauge, maxLagBytesGauge} {
		check("after the cluster was deleted", c)
	}
}
