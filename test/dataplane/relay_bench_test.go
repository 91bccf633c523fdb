package dataplane_test

import (
	"slices"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/waitfor"
)

// BenchmarkRelayStreaming measures how fast a follower catches up through
// the relay: the follower is stopped, the leader writes about 160 MB of WAL,
// and the follower is started again; its received position is sampled
// every 100 ms from the first byte it gets to the leader's position. The
// rate over each sample, and over the whole catch-up, is what the relay
// (TLS included) and both PostgreSQLs sustain together. `make bench`
// prints it.
func BenchmarkRelayStreaming(b *testing.B) {
	c := newCluster(b, 2, "127.0.48")
	leader, follower := c.pods[0], c.pods[1]
	for _, p := range c.pods {
		waitfor.Condition(b, 90*time.Second, p.name+" ready", p.ready)
	}
	ctx := b.Context()
	if err := exec1(ctx, leader, "CREATE TABLE big (id bigint, pad text)"); err != nil {
		b.Fatal(err)
	}
	const rounds = 3
	var samples, totals []float64 // MB/s
	for round := range rounds {
		follower.kill()
		from := leaderLSN(b, leader)
		// About 160 MB of WAL: rows of 1 kB that do not compress.
		if err := exec1(ctx, leader, "INSERT INTO big SELECT g, repeat(md5(g::text || random()::text), 32) "+
			"FROM generate_series(1, 120000) g"); err != nil {
			b.Fatal(err)
		}
		to := leaderLSN(b, leader)
		follower.restart(b)
		var first, last time.Time
		var firstLSN, prev lsn.LSN
		prevAt := time.Time{}
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			st, err := follower.status()
			now := time.Now()
			if err == nil && st.ReceivedLSN > from {
				if first.IsZero() {
					first, firstLSN = now, st.ReceivedLSN
				} else if now.Sub(prevAt) > 0 {
					samples = append(samples, float64(st.ReceivedLSN-prev)/now.Sub(prevAt).Seconds()/1e6)
				}
				prev, prevAt = st.ReceivedLSN, now
				if st.ReceivedLSN >= to {
					last = now
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if last.IsZero() {
			b.Fatalf("round %d: the follower did not catch up with %s within 3 minutes", round, to)
		}
		total := float64(to-firstLSN) / last.Sub(first).Seconds() / 1e6
		totals = append(totals, total)
		b.Logf("round %d: %.0f MB of WAL caught up in %s: %.0f MB/s", round, float64(to-from)/1e6,
			last.Sub(first).Round(time.Millisecond), total)
	}
	slices.Sort(samples)
	p := func(q float64) float64 { return samples[int(q*float64(len(samples)-1))] }
	var sum float64
	for _, v := range totals {
		sum += v
	}
	b.ReportMetric(sum/float64(len(totals)), "MB/s")
	b.ReportMetric(p(0.50), "p50_MB/s")
	b.ReportMetric(p(0.05), "p5_MB/s")
	b.ReportMetric(p(0.95), "p95_MB/s")
	b.Logf("relay catch-up: mean %.0f MB/s over %d rounds; per 100 ms sample p5 %.0f, p50 %.0f, p95 %.0f MB/s (%d samples)",
		sum/float64(len(totals)), rounds, p(0.05), p(0.50), p(0.95), len(samples))
}

// leaderLSN is the leader's current WAL position.
func leaderLSN(b *testing.B, leader *pod) lsn.LSN {
	b.Helper()
	conn, err := leader.conn(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(b.Context())
	var pos lsn.LSN
	if err := conn.QueryRow(b.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&pos); err != nil {
		b.Fatal(err)
	}
	return pos
}
