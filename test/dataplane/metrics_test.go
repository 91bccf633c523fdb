package dataplane_test

import (
	"fmt"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/waitfor"
)

// scrape reads p's /metrics as Prometheus would (its default timeout is
// 10 s).
func (p *pod) scrape() (map[string]*dto.MetricFamily, error) {
	client := p.https()
	client.Timeout = 10 * time.Second
	resp, err := client.Get(p.agentURL("/metrics"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// series returns the values of family name by the value of label (""
// for a series without labels).
func series(families map[string]*dto.MetricFamily, name, label string) map[string]float64 {
	out := map[string]float64{}
	f, ok := families[name]
	if !ok {
		return out
	}
	for _, m := range f.GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		switch {
		case m.GetGauge() != nil:
			out[key] = m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// The agent's PostgreSQL metrics say what PostgreSQL says: each follower's
// lag on the leader (and a frozen follower's rising), commits, connections
// against max_connections, slots and the WAL they hold, the WAL rate; and
// a follower that is gone loses its series.
func TestPostgresMetricsFollowTheCluster(t *testing.T) {
	c := newCluster(t, 3, "127.0.39")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, f1, f2 := c.pods[0], c.pods[1], c.pods[2]
	ctx := t.Context()
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		m, err := leader.scrape()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	for _, p := range c.pods {
		m, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		want := 1.0
		if p == leader {
			want = 0
		}
		if up, rec := series(m, "regent_postgres_up", "")[""], series(m, "regent_postgres_in_recovery", "")[""]; up != 1 || rec != want {
			t.Errorf("%s: regent_postgres_up %v, in_recovery %v; want 1, %v", p.name, up, rec, want)
		}
	}

	// One lag series per follower, none for the leader itself.
	waitfor.Condition(t, 20*time.Second, "a lag series per follower, caught up", func() error {
		lag := series(scrape(), "regent_postgres_replication_lag_bytes", "follower")
		if got := slices.Sorted(maps.Keys(lag)); !slices.Equal(got, []string{f1.name, f2.name}) || lag[f1.name] != 0 || lag[f2.name] != 0 {
			return fmt.Errorf("lag %v", lag)
		}
		return nil
	})

	lc, err := leader.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close(ctx)
	var maxConns float64
	if err := lc.QueryRow(ctx, "SELECT current_setting('max_connections')::float8").Scan(&maxConns); err != nil {
		t.Fatal(err)
	}
	m := scrape()
	if got := series(m, "regent_postgres_max_connections", "")[""]; got != maxConns {
		t.Errorf("regent_postgres_max_connections %v, PostgreSQL says %v", got, maxConns)
	}
	// lc is idle between statements: it counts as an idle client connection.
	if idle := series(m, "regent_postgres_connections", "state")["idle"]; idle < 1 {
		t.Errorf("idle connections %v with one open", idle)
	}
	var slots []string
	rows, _ := lc.Query(ctx, "SELECT slot_name::text FROM pg_replication_slots WHERE active")
	if slots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if got := series(m, "regent_postgres_replication_slot_active", "slot"); !slices.Equal(slices.Sorted(maps.Keys(got)), []string{names.Slot(f1.name), names.Slot(f2.name)}) ||
		!slices.Equal(slices.Sorted(slices.Values(slots)), slices.Sorted(maps.Keys(got))) {
		t.Errorf("slots exported %v, PostgreSQL's active slots %v", got, slots)
	}

	// Commits and WAL are counted.
	commits0 := series(m, "regent_postgres_xact_commits_total", "database")["app"]
	wal0 := series(m, "regent_postgres_wal_bytes_total", "")[""]
	if _, err := lc.Exec(ctx, "CREATE TABLE m (id serial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := lc.Exec(ctx, "INSERT INTO m (v) VALUES (repeat('x', 1000))"); err != nil {
			t.Fatal(err)
		}
	}
	// PostgreSQL publishes a backend's statistics when it goes idle, at most
	// once a second.
	waitfor.Condition(t, 10*time.Second, "commits and WAL counted", func() error {
		m := scrape()
		commits, wal := series(m, "regent_postgres_xact_commits_total", "database")["app"], series(m, "regent_postgres_wal_bytes_total", "")[""]
		if commits-commits0 < 21 || wal-wal0 < 20_000 {
			return fmt.Errorf("commits %v → %v, WAL %v → %v bytes", commits0, commits, wal0, wal)
		}
		return nil
	})

	// A frozen follower falls behind on the leader's series, in bytes and
	// in seconds; the other stays caught up; its slot holds the WAL.
	f2.freeze(t, true)
	thawed := false
	defer func() {
		if !thawed {
			f2.freeze(t, false)
		}
	}()
	write := func() {
		t.Helper()
		if _, err := lc.Exec(ctx, "INSERT INTO m (v) SELECT repeat('y', 1000) FROM generate_series(1, 1000)"); err != nil {
			t.Fatal(err)
		}
	}
	write()
	var behind float64
	waitfor.Condition(t, 20*time.Second, f2.name+"'s lag rises while frozen", func() error {
		write()
		m := scrape()
		bytes, secs := series(m, "regent_postgres_replication_lag_bytes", "follower"), series(m, "regent_postgres_replication_lag_seconds", "follower")
		held := series(m, "regent_postgres_replication_slot_retained_wal_bytes", "slot")[names.Slot(f2.name)]
		if bytes[f2.name] < 1<<20 || secs[f2.name] < 2 || held < bytes[f2.name] {
			return fmt.Errorf("lag bytes %v, seconds %v, slot holds %v", bytes, secs, held)
		}
		behind = bytes[f2.name]
		return nil
	})
	waitfor.Condition(t, 10*time.Second, f1.name+" caught up meanwhile", func() error {
		if lag := series(scrape(), "regent_postgres_replication_lag_bytes", "follower")[f1.name]; lag != 0 {
			return fmt.Errorf("%s lag %v", f1.name, lag)
		}
		return nil
	})
	t.Logf("%s frozen: %.0f bytes behind", f2.name, behind)
	f2.freeze(t, false)
	thawed = true
	waitfor.Condition(t, 30*time.Second, f2.name+" caught up after the thaw", func() error {
		m := scrape()
		if lag, secs := series(m, "regent_postgres_replication_lag_bytes", "follower")[f2.name], series(m, "regent_postgres_replication_lag_seconds", "follower")[f2.name]; lag != 0 || secs != 0 {
			return fmt.Errorf("lag %v bytes, %v s", lag, secs)
		}
		return nil
	})
	if m, err := f2.scrape(); err != nil || series(m, "regent_postgres_replay_lag_seconds", "")[""] != 0 {
		t.Errorf("%s's own replay lag after catching up: %v (%v)", f2.name, series(m, "regent_postgres_replay_lag_seconds", ""), err)
	}

	// A follower that is gone loses its series on the leader.
	f2.kill()
	waitfor.Condition(t, 30*time.Second, f2.name+"'s series gone", func() error {
		m := scrape()
		for _, name := range []string{"regent_postgres_replication_lag_bytes", "regent_postgres_replication_lag_seconds", "regent_postgres_replication_synchronous"} {
			if _, ok := series(m, name, "follower")[f2.name]; ok {
				return fmt.Errorf("%s still has %s", name, f2.name)
			}
		}
		if _, ok := series(m, "regent_postgres_replication_lag_bytes", "follower")[f1.name]; !ok {
			return fmt.Errorf("%s's series went too", f1.name)
		}
		return nil
	})

	// A PostgreSQL that does not answer reports up 0 within the scrape's
	// bound, rather than holding or failing the scrape.
	pm, err := f1.postmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pm, syscall.SIGCONT) }()
	start := time.Now()
	m, err = f1.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if up := series(m, "regent_postgres_up", "")[""]; up != 0 {
		t.Errorf("%s with its postmaster stopped: regent_postgres_up %v", f1.name, up)
	}
	if _, ok := m["regent_postgres_connections"]; ok {
		t.Errorf("%s with its postmaster stopped still reports connections", f1.name)
	}
	t.Logf("scrape of a stopped PostgreSQL took %s", time.Since(start).Round(time.Millisecond))
}
