package e2e_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// The soak's size: how long pgbench writes at least, and how many
// failovers happen meanwhile. REGENT_SOAK=<duration>,<failovers> shortens
// it for a quick run by hand; `make test` runs the full one.
func soakSize(t testing.TB) (time.Duration, int) {
	t.Helper()
	d, n := 10*time.Minute, 30
	if v := os.Getenv("REGENT_SOAK"); v != "" {
		ds, ns, _ := strings.Cut(v, ",")
		var err1, err2 error
		d, err1 = time.ParseDuration(ds)
		n, err2 = strconv.Atoi(ns)
		if err1 != nil || err2 != nil {
			t.Fatalf("REGENT_SOAK=%q: want <duration>,<failovers>, such as 2m,6", v)
		}
	}
	return d, n
}

// On volumes whose 1 Gi is enforced, pgbench writes for ten minutes through
// the leader Service while the leader is killed, deleted or switched over
// thirty times: the storage budget keeps every volume at most half full,
// no volume ever reaches the 80 % warning, and PostgreSQL never reports a
// full disk.
func TestVolumesStayWithinTheirBudgetUnderLoadAndFailovers(t *testing.T) {
	duration, failovers := soakSize(t)
	ctx := t.Context()
	const sns = "e2e-soak"
	createHealthyCluster(t, sns, "mode: Async")
	proxyAddr := serviceProxy(t, sns, "db-leader")
	secret, _, caFile := appDSN(t, sns)
	_, port, _ := strings.Cut(proxyAddr, ":")
	conninfo := fmt.Sprintf("host=%s hostaddr=127.0.0.1 port=%s dbname=%s user=%s sslmode=verify-full sslrootcert=%s connect_timeout=3",
		secret.Data["host"], port, secret.Data["dbname"], secret.Data["user"], caFile)
	pgbench := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, pgTool(t, "pgbench"), append(args, conninfo)...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+string(secret.Data["password"]))
		// Stopped with SIGINT, pgbench still reports what it did.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	waitfor.Condition(t, 2*time.Minute, "pgbench -i", func() error {
		out, err := pgbench(ctx, "-i", "-s", "5", "-q")
		if err != nil {
			return fmt.Errorf("%w\n%s", err, lastLines(out, 5))
		}
		return nil
	})

	// The volumes, as their filesystems report them, sampled throughout.
	disks := newDiskWatch(t, sns)
	stopWatch := disks.run()
	defer stopWatch()

	// pgbench runs until both the duration has passed and the failovers are
	// done; each failover ends its connections, and it starts again.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var transactions, runs int
	var load sync.WaitGroup
	load.Go(func() {
		processed := regexp.MustCompile(`number of transactions actually processed: (\d+)`)
		for loadCtx.Err() == nil {
			out, _ := pgbench(loadCtx, "-c", "2", "-j", "1", "-T", "3600", "-n")
			runs++
			if m := processed.FindStringSubmatch(out); m != nil {
				n, _ := strconv.Atoi(m[1])
				transactions += n
			}
			select {
			case <-loadCtx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	start := time.Now()

	kinds := []struct {
		name string
		do   func(leader string)
	}{
		{"kill", func(leader string) { podGroupIn(t, sns, leader).sub("postgres").kill(t) }},
		{"delete", func(leader string) { kubectl(t, "-n", sns, "delete", "pod", leader, "--wait=false") }},
		{"switchover", func(leader string) {
			target := fmt.Sprintf("db-%d", (ordinal(leader)+1)%3)
			kubectl(t, "-n", sns, "annotate", "--overwrite", "dbrs/db", names.AnnotationSwitchoverTo+"="+target)
		}},
	}
	// A real kubelet starts a container killed again within ten minutes
	// only after its crash-loop back-off (10 s, doubled each time, up to
	// 5 min): a member whose PostgreSQL was killed often is back later.
	healTimeout := "3m"
	if realNodes {
		healTimeout = "7m"
	}
	var elections []time.Duration
	for i := range failovers {
		// Spread the failovers over the duration; never faster than the
		// cluster heals (every member ready again).
		if next := start.Add(duration * time.Duration(i) / time.Duration(failovers)); time.Until(next) > 0 {
			time.Sleep(time.Until(next))
		}
		kubectl(t, "-n", sns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout="+healTimeout)
		k := kinds[i%len(kinds)]
		old, epoch := fieldIn(t, sns, ".status.leader"), fieldIn(t, sns, ".status.epoch")
		at := time.Now()
		k.do(old)
		waitfor.Condition(t, time.Minute, fmt.Sprintf("failover %d (%s of %s): a new leader", i+1, k.name, old), func() error {
			if l, e := fieldIn(t, sns, ".status.leader"), fieldIn(t, sns, ".status.epoch"); l == old || e == epoch || l == "" {
				return fmt.Errorf("leader %q at epoch %s", l, e)
			}
			return nil
		})
		elections = append(elections, time.Since(at))
		t.Logf("failover %2d at %s: %-10s of %s → %s, new leader after %s; disks: %s", i+1,
			time.Since(start).Round(time.Second), k.name, old, fieldIn(t, sns, ".status.leader"),
			time.Since(at).Round(100*time.Millisecond), disks.now())
	}
	if wait := time.Until(start.Add(duration)); wait > 0 {
		time.Sleep(wait)
	}
	stopLoad()
	load.Wait()
	kubectl(t, "-n", sns, "wait", "dbrs/db", "--for=jsonpath={.status.ready}=3/3", "--timeout=3m")
	elapsed := time.Since(start)
	stopWatch()
	slices.Sort(elections)
	t.Logf("%d failovers in %s; a new leader after p50 %s, max %s; pgbench: %d transactions (%.0f/s) in %d runs",
		len(elections), elapsed.Round(time.Second), elections[len(elections)/2].Round(100*time.Millisecond),
		elections[len(elections)-1].Round(100*time.Millisecond), transactions, float64(transactions)/elapsed.Seconds(), runs)
	if transactions == 0 {
		t.Errorf("pgbench committed nothing")
	}

	// At the end every volume is at most half full, and none ever came
	// near the warning.
	for _, v := range disks.final() {
		t.Logf("%s: %s at the end, peak %.0f %%; its largest directories:\n%s",
			v.pod, v.usage, 100*v.peak, largestDirs(disks.paths[v.pod], 3, 8))
		if v.usage.ratio() > 0.5 {
			t.Errorf("%s's volume is %s at the end: more than half full", v.pod, v.usage)
		}
		if v.peak >= 0.8 {
			t.Errorf("%s's volume reached %.0f %% during the run", v.pod, 100*v.peak)
		}
	}
	// Nothing met a full disk: PostgreSQL, the archive, the rewinds and
	// clones, in every instance of every pod the soak had (a deleted pod's
	// logs are no longer served, so the node's files are read).
	logs, err := filepath.Glob(filepath.Join(cfg.StateDir, "nodes", "*", "logs", sns+"_*", "*", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no container logs of the soak's pods: %v", err)
	}
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if full := grepLines(string(b), "No space left on device"); full != "" {
			t.Errorf("%s met a full disk:\n%s", f, full)
		}
	}
	t.Logf("no full disk in %d container logs", len(logs))
	if events := kubectl(t, "-n", sns, "get", "events", "--field-selector", "reason=DiskFilling", "-o", "name"); strings.TrimSpace(events) != "" {
		t.Errorf("DiskFilling events: %s", events)
	}
	kubectl(t, "delete", "namespace", sns, "--wait=false")
}

func ordinal(pod string) int {
	n, _ := strconv.Atoi(pod[strings.LastIndex(pod, "-")+1:])
	return n
}

// usage is a filesystem's use, as df computes it: used over what its user
// may use (the blocks reserved for root are not PostgreSQL's).
type usage struct{ used, avail uint64 }

func (u usage) ratio() float64 {
	if u.used+u.avail == 0 {
		return 0
	}
	return float64(u.used) / float64(u.used+u.avail)
}

func (u usage) String() string {
	return fmt.Sprintf("%d of %d MiB (%.0f %%)", u.used>>20, (u.used+u.avail)>>20, 100*u.ratio())
}

func statUsage(path string) (usage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return usage{}, err
	}
	bs := uint64(st.Bsize)
	return usage{used: (st.Blocks - st.Bfree) * bs, avail: st.Bavail * bs}, nil
}

// diskWatch samples the data volumes of db-0..2 every few seconds, from
// the loop-mounted filesystems behind their claims.
type diskWatch struct {
	paths map[string]string // pod → the volume's mount point
	mu    sync.Mutex
	peak  map[string]float64
}

func newDiskWatch(t testing.TB, namespace string) *diskWatch {
	t.Helper()
	d := &diskWatch{paths: map[string]string{}, peak: map[string]float64{}}
	for i := range 3 {
		pod := fmt.Sprintf("db-%d", i)
		d.paths[pod] = volumePath(t, namespace, pod)
	}
	return d
}

// volumePath is where pod's data volume is mounted on its node.
func volumePath(t testing.TB, namespace, pod string) string {
	t.Helper()
	pvc, err := cs.CoreV1().PersistentVolumeClaims(namespace).Get(t.Context(), names.VolumeData+"-"+pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := cs.CoreV1().PersistentVolumes().Get(t.Context(), pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.HostPath == nil {
		t.Fatalf("%s is no local volume", pv.Name)
	}
	return pv.Spec.HostPath.Path
}

func (d *diskWatch) sample() map[string]usage {
	out := map[string]usage{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for pod, path := range d.paths {
		u, err := statUsage(path)
		if err != nil {
			continue
		}
		out[pod] = u
		d.peak[pod] = max(d.peak[pod], u.ratio())
	}
	return out
}

// run samples until the returned function is called.
func (d *diskWatch) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d.sample()
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// now is the volumes' use at this moment, in a line.
func (d *diskWatch) now() string {
	u := d.sample()
	var parts []string
	for i := range 3 {
		pod := fmt.Sprintf("db-%d", i)
		parts = append(parts, fmt.Sprintf("%s %.0f%%", pod, 100*u[pod].ratio()))
	}
	return strings.Join(parts, ", ")
}

type volumeReport struct {
	pod   string
	usage usage
	peak  float64
}

// largestDirs lists the n largest directories under root, down to depth
// levels, with their sizes: where a volume's space went.
func largestDirs(root string, depth, n int) string {
	sizes := map[string]int64{}
	_ = filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		parts := strings.Split(rel, string(filepath.Separator))
		for i := 1; i <= min(depth, len(parts)); i++ {
			sizes[filepath.Join(parts[:i]...)] += info.Size()
		}
		return nil
	})
	dirs := slices.Collect(maps.Keys(sizes))
	slices.SortFunc(dirs, func(a, b string) int { return cmp.Compare(sizes[b], sizes[a]) })
	var lines []string
	for _, d := range dirs[:min(n, len(dirs))] {
		lines = append(lines, fmt.Sprintf("  %6d MiB  %s", sizes[d]>>20, d))
	}
	return strings.Join(lines, "\n")
}

// final samples once more and reports each volume with its peak.
func (d *diskWatch) final() []volumeReport {
	u := d.sample()
	var out []volumeReport
	for i := range 3 {
		pod := fmt.Sprintf("db-%d", i)
		d.mu.Lock()
		out = append(out, volumeReport{pod: pod, usage: u[pod], peak: d.peak[pod]})
		d.mu.Unlock()
	}
	return out
}
