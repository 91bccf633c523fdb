package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/regent-dev/regent/replica/api"
)

// metricsHandler serves the agent's Prometheus metrics, computed from its
// status at every scrape.
func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.relayRefused, newPGCollector(a))
	gauge := func(name, help string, f func(api.Status) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "regent", Subsystem: "agent", Name: name, Help: help,
		}, func() float64 { return f(a.Status()) }))
	}
	boolean := boolValue
	// Judged at the scrape by the clock, not by the run loop: a leader
	// that was frozen past its deadline reports 0 the moment it thaws,
	// before its loop notices, so Prometheus never sees two leaders.
	gauge("leader", "1 while the agent leads: it holds the Lease at its epoch, unfenced, before its lease deadline.", func(s api.Status) float64 {
		return boolean(s.Mode == api.ModeLeader && !s.Fenced && s.LeaseDeadline != nil && a.clock.Now().Before(*s.LeaseDeadline))
	})
	gauge("epoch", "The leadership epoch the agent last saw on the Lease.", func(s api.Status) float64 { return float64(s.Epoch) })
	gauge("fenced", "1 while the agent keeps its leader from acknowledging writes.", func(s api.Status) float64 {
		return boolean(s.Fenced)
	})
	gauge("sealed", "1 while this follower has sealed the current epoch.", func(s api.Status) float64 { return boolean(s.Sealed) })
	gauge("commit_gate_open", "1 while the commit gate acknowledges the leader's WAL (Async mode, valid lease).", func(s api.Status) float64 {
		return boolean(s.CommitGate == string(gateOpen))
	})
	gauge("postgres_running", "1 while PostgreSQL runs.", func(s api.Status) float64 { return boolean(s.Running) })
	gauge("streaming", "1 while a follower's WAL receiver streams.", func(s api.Status) float64 { return boolean(s.Streaming) })
	gauge("timeline", "PostgreSQL's timeline.", func(s api.Status) float64 { return float64(s.Timeline) })
	gauge("lease_remaining_seconds", "Seconds until the leader fences itself unless it renews.", func(s api.Status) float64 {
		if s.LeaseDeadline == nil {
			return 0
		}
		return max(0, s.LeaseDeadline.Sub(a.clock.Now()).Seconds())
	})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "regent", Subsystem: "agent",
		Name: "certificate_expiry_timestamp_seconds",
		Help: "When the pod's current certificate expires, in seconds since the epoch (0 before it has one)."},
		func() float64 {
			if t := a.tls.expiry(); !t.IsZero() {
				return float64(t.Unix())
			}
			return 0
		}))
	gauge("write_lsn_bytes", "The leader's current WAL position, in bytes.", func(s api.Status) float64 { return float64(s.WriteLSN) })
	gauge("received_lsn_bytes", "The last WAL position a follower received, in bytes.", func(s api.Status) float64 {
		return float64(s.ReceivedLSN)
	})
	gauge("replayed_lsn_bytes", "The last WAL position a follower replayed, in bytes.", func(s api.Status) float64 {
		return float64(s.ReplayedLSN)
	})
	gauge("data_volume_used_bytes", "Bytes used on the pod's data volume.", func(s api.Status) float64 { return float64(s.DiskUsedBytes) })
	gauge("data_volume_capacity_bytes", "Size of the pod's data volume, in bytes.", func(s api.Status) float64 { return float64(s.DiskTotalBytes) })
	// WAL archiving to the object store (docs/backup.md); 0 without one.
	ship := func(s api.Status) api.WALShipping {
		if s.WALShipping == nil {
			return api.WALShipping{}
		}
		return *s.WALShipping
	}
	gauge("wal_archive_pending_files", "WAL files of this pod's archive that the object store does not hold yet.", func(s api.Status) float64 {
		return float64(ship(s).Pending)
	})
	gauge("wal_archive_pending_bytes", "Their size in bytes.", func(s api.Status) float64 { return float64(ship(s).PendingBytes) })
	gauge("wal_archive_failing", "1 while this pod's uploads to the object store fail.", func(s api.Status) float64 {
		return boolean(ship(s).Error != "")
	})
	gauge("wal_archive_last_shipped_timestamp_seconds", "When this pod last shipped a WAL file (or found it shipped), in seconds since the epoch.",
		func(s api.Status) float64 {
			if t := ship(s).LastShippedAt; t != nil {
				return float64(t.Unix())
			}
			return 0
		})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
