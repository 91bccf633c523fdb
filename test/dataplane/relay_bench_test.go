package dataplane_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
)

// BenchmarkRelayStreaming measures what the relay carries per second: a
// follower's data directory is wiped and the follower cloned again from a
// leader holding about 250 MB, a base backup that streams the whole data
// directory through both agents' relays (TLS included). The rate of each
// clone is the data directory's size over the duration of pg_basebackup,
// as instance timed it. `make bench` prints it.
func BenchmarkRelayStreaming(b *testing.B) {
	c := newCluster(b, 2, "127.0.48")
	leader, follower := c.pods[0], c.pods[1]
	for _, p := range c.pods {
		waitfor.Condition(b, 90*time.Second, p.name+" ready", p.ready)
	}
	ctx := b.Context()
	// Rows of 1 kB that do not compress.
	if err := exec1(ctx, leader, "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text || random()::text), 32) AS pad "+
		"FROM generate_series(1, 200000) g"); err != nil {
		b.Fatal(err)
	}
	if err := exec1(ctx, leader, "CHECKPOINT"); err != nil {
		b.Fatal(err)
	}
	const rounds = 5
	var rates []float64 // MB/s
	pgdata := filepath.Join(follower.logDir, "data", "pgdata")
	for round := range rounds {
		follower.kill()
		if err := os.RemoveAll(pgdata); err != nil {
			b.Fatal(err)
		}
		follower.restart(b)
		waitfor.Condition(b, 3*time.Minute, "the follower cloned again and ready", follower.ready)
		took, err := lastBaseBackup(filepath.Join(follower.logDir, "instance.log"))
		if err != nil {
			b.Fatal(err)
		}
		size, err := dirSize(pgdata)
		if err != nil {
			b.Fatal(err)
		}
		rate := float64(size) / took.Seconds() / 1e6
		rates = append(rates, rate)
		b.Logf("round %d: %.0f MB cloned through the relay in %s: %.0f MB/s", round, float64(size)/1e6, took, rate)
	}
	slices.Sort(rates)
	p := func(q float64) float64 { return rates[int(q*float64(len(rates)-1)+0.5)] }
	b.ReportMetric(p(0.50), "p50_MB/s")
	b.ReportMetric(p(0.05), "p5_MB/s")
	b.ReportMetric(p(0.95), "p95_MB/s")
	b.Logf("base backup through the relay, %d clones: p5 %.0f, p50 %.0f, p95 %.0f MB/s", rounds, p(0.05), p(0.50), p(0.95))
}

// lastBaseBackup is how long the last pg_basebackup in instance's log took.
func lastBaseBackup(logPath string) (time.Duration, error) {
	return lastLogged(logPath, func(msg, tool string) bool { return msg == "Ran" && tool == "pg_basebackup" })
}

// lastLogged is the duration of the last line of instance's log that
// match picks (by its message and tool).
func lastLogged(logPath string, match func(msg, tool string) bool) (time.Duration, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var took time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct{ Msg, Tool, Duration string }
		if json.Unmarshal(sc.Bytes(), &line) != nil || !match(line.Msg, line.Tool) {
			continue
		}
		if took, err = time.ParseDuration(line.Duration); err != nil {
			return 0, err
		}
	}
	if took == 0 {
		return 0, fmt.Errorf("no such line in %s", logPath)
	}
	return took, sc.Err()
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
