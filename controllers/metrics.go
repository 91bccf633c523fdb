package controllers

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The operator's metrics, served with controller-runtime's on the manager's
// metrics endpoint.
var (
	failoversTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regent_failovers_total",
		Help: "Leadership changes the operator carried out, by kind (Failover or Switchover).",
	}, []string{"namespace", "cluster", "kind"})
	epochGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_epoch",
		Help: "The cluster's current leadership epoch (the Lease's leaseTransitions).",
	}, []string{"namespace", "cluster"})
	maxLagBytesGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_max_lag_bytes",
		Help: "The cluster's spec.failover.maxLagBytes, in Async mode only: the lag over which a follower is not promoted automatically, for alerts on lag.",
	}, []string{"namespace", "cluster"})
	memberLagBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_member_lag_bytes",
		Help: "WAL bytes a follower has not received yet, behind the leader's last reported position.",
	}, []string{"namespace", "cluster", "pod"})
	certificateExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_certificate_expiry_timestamp_seconds",
		Help: "When a member's certificate expires, in seconds since the epoch; the operator renews it after two thirds of its life.",
	}, []string{"namespace", "cluster", "pod"})
	memberDiskUsedBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_member_disk_used_bytes",
		Help: "Bytes used on a member's data volume.",
	}, []string{"namespace", "cluster", "pod"})
	memberDiskCapacityBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regent_member_disk_capacity_bytes",
		Help: "Size of a member's data volume, in bytes.",
	}, []string{"namespace", "cluster", "pod"})
	decisionSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "regent_failover_decision_seconds",
		Help:    "Time to read the agents and decide, per pass.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})
)

func init() {
	metrics.Registry.MustRegister(failoversTotal, epochGauge, maxLagBytesGauge, memberLagBytes, memberDiskUsedBytes, memberDiskCapacityBytes, certificateExpiry, decisionSeconds)
}

// memberSeries are the metrics with a series per member (label pod).
var memberSeries = []*prometheus.GaugeVec{memberLagBytes, memberDiskUsedBytes, memberDiskCapacityBytes, certificateExpiry}

// exported remembers, per cluster, the members the operator exported series
// for: a member scaled away loses its series rather than keeping its last
// values for good.
var exported = struct {
	sync.Mutex
	pods map[types.NamespacedName][]string
}{pods: map[types.NamespacedName][]string{}}

// keepMemberSeries deletes the series of the cluster's members other than
// pods, and remembers pods as the ones it has.
func keepMemberSeries(cluster types.NamespacedName, pods []string) {
	exported.Lock()
	defer exported.Unlock()
	for _, old := range exported.pods[cluster] {
		if !slices.Contains(pods, old) {
			for _, v := range memberSeries {
				v.DeleteLabelValues(cluster.Namespace, cluster.Name, old)
			}
		}
	}
	exported.pods[cluster] = slices.Clone(pods)
}

// forgetMetrics deletes every series of a deleted cluster.
func forgetMetrics(cluster types.NamespacedName) {
	exported.Lock()
	delete(exported.pods, cluster)
	exported.Unlock()
	labels := prometheus.Labels{"namespace": cluster.Namespace, "cluster": cluster.Name}
	for _, v := range memberSeries {
		v.DeletePartialMatch(labels)
	}
	epochGauge.DeletePartialMatch(labels)
	maxLagBytesGauge.DeletePartialMatch(labels)
	failoversTotal.DeletePartialMatch(labels)
}
