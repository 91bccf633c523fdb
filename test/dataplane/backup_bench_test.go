package dataplane_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/replica/backup"
	"github.com/regent-dev/regent/replica/instance"
)

// BenchmarkBackupAndRestore measures a base backup of a database of about
// 1 GB (pgbench's tables; REGENT_BENCH_BACKUP_MB) taken on a follower into a real S3 server,
// and a new cluster restored from it: the backup's rate is the tar's bytes
// over the time from the agent's start to its end (stream, compress,
// upload, read back and check); the restore's, the same bytes over
// instance's restore (download, check, extract, pg_verifybackup, replay,
// promote). `make bench` prints them.
func BenchmarkBackupAndRestore(b *testing.B) {
	mb := 1024
	if v, err := strconv.Atoi(os.Getenv("REGENT_BENCH_BACKUP_MB")); err == nil && v > 0 {
		mb = v
	}
	srv := startStore(b)
	c := newCluster(b, 2, "127.0.67", withStore(srv))
	for _, p := range c.pods {
		waitfor.Condition(b, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	ctx := b.Context()
	// pgbench's tables: about 15 MB of data and indexes per scale unit.
	cmd := exec.CommandContext(ctx, filepath.Join(pgBinDir(b), "pgbench"), "-h", leader.ip, "-p", "5432", "-U", "postgres",
		"-i", "-q", "-s", strconv.Itoa(max(1, mb/15)), "app")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+superPW, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+leader.caFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	if err := exec1(ctx, leader, "CHECKPOINT"); err != nil {
		b.Fatal(err)
	}
	waitfor.Condition(b, 10*time.Minute, "the follower caught up", func() error {
		l, err := leader.status()
		if err != nil {
			return err
		}
		f, err := follower.status()
		if err == nil && f.ReplayedLSN < l.WriteLSN {
			err = fmt.Errorf("replayed %s of %s", f.ReplayedLSN, l.WriteLSN)
		}
		return err
	})
	const rounds = 3
	var backupRates, restoreRates []float64 // MB/s
	var lastID string
	var lastBytes int64
	for round := range rounds {
		id := backup.NewID(time.Date(2026, 1, 1, 0, 0, round, 0, time.UTC))
		p := c.backupOn(b, follower, id)
		took := p.EndedAt.Sub(p.StartedAt)
		rate := float64(p.Bytes) / took.Seconds() / 1e6
		backupRates = append(backupRates, rate)
		b.Logf("backup %d: %.0f MB (%.0f MB stored) in %s: %.0f MB/s", round, float64(p.Bytes)/1e6, float64(p.StoredBytes)/1e6,
			took.Round(time.Millisecond), rate)
		lastID, lastBytes = id, p.Bytes
	}
	for round := range rounds {
		r := newCluster(b, 1, fmt.Sprintf("127.0.%d", 68+round), withRecovery(*c.store, instance.RestoreRequest{BackupID: lastID}, 2))
		waitfor.Condition(b, 30*time.Minute, "the restored cluster ready", r.pods[0].ready)
		took, err := lastRestore(filepath.Join(r.pods[0].logDir, "instance.log"))
		if err != nil {
			b.Fatal(err)
		}
		rate := float64(lastBytes) / took.Seconds() / 1e6
		restoreRates = append(restoreRates, rate)
		b.Logf("restore %d: %.0f MB in %s: %.0f MB/s", round, float64(lastBytes)/1e6, took.Round(time.Millisecond), rate)
		r.stop()
	}
	report := func(name string, rates []float64) {
		slices.Sort(rates)
		p := func(q float64) float64 { return rates[int(q*float64(len(rates)-1)+0.5)] }
		b.ReportMetric(p(0.50), "p50_MB/s_"+name)
		b.ReportMetric(p(0.95), "p95_MB/s_"+name)
		b.Logf("%s of %d MB, %d rounds: p50 %.0f, p95 %.0f MB/s (slowest %.0f)", name, mb, len(rates), p(0.50), p(0.95), rates[0])
	}
	report("backup", backupRates)
	report("restore", restoreRates)
}

// lastRestore is how long the last restore in instance's log took.
func lastRestore(logPath string) (time.Duration, error) {
	return lastLogged(logPath, func(msg, _ string) bool { return msg == "Recovered to the target and promoted" })
}
