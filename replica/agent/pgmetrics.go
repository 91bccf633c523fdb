package agent

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regent-dev/regent/internal/names"
)

// pgScrapeTimeout bounds one scrape's queries: a PostgreSQL that does not
// answer reports regent_postgres_up 0 rather than holding the scrape.
const pgScrapeTimeout = 3 * time.Second

// pgCollector reads PostgreSQL's own statistics at every scrape
// (docs/observability.md). Every series comes from the rows PostgreSQL has
// now, so a follower that left the leader's pg_stat_replication, a dropped
// slot or database, loses its series at the next scrape.
type pgCollector struct {
	a *Agent

	up, inRecovery, maxConnections, connections                       *prometheus.Desc
	lagBytes, lagSeconds, synchronous, replayLagSeconds, gateLagBytes *prometheus.Desc
	commits, rollbacks, databaseSize                                  *prometheus.Desc
	archived, archiveFailed, lastArchived, lastArchiveFailed          *prometheus.Desc
	slotRetained, slotActive, walBytes, walDirectory                  *prometheus.Desc
}

func newPGCollector(a *Agent) *pgCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("regent", "postgres", name), help, labels, nil)
	}
	return &pgCollector{
		a:                a,
		up:               d("up", "1 when the agent could query its PostgreSQL at this scrape; the other regent_postgres series are absent when 0."),
		inRecovery:       d("in_recovery", "1 while PostgreSQL replays WAL (a follower)."),
		maxConnections:   d("max_connections", "PostgreSQL's max_connections."),
		connections:      d("connections", "Client connections, by state (pg_stat_activity).", "state"),
		lagBytes:         d("replication_lag_bytes", "On the leader: WAL bytes a follower has not replayed yet.", "follower"),
		lagSeconds:       d("replication_lag_seconds", "On the leader: how far a follower's replay is behind, in seconds (0 when it has replayed everything; while behind, at least the time since its last reply).", "follower"),
		synchronous:      d("replication_synchronous", "On the leader: 1 when a follower is a synchronous standby.", "follower"),
		replayLagSeconds: d("replay_lag_seconds", "On a follower: seconds since the last replayed transaction while it has received WAL left to replay, else 0."),
		gateLagBytes:     d("commit_gate_lag_bytes", "On the leader in Async mode: WAL bytes the commit gate has not acknowledged yet."),
		commits:          d("xact_commits_total", "Transactions committed, by database.", "database"),
		rollbacks:        d("xact_rollbacks_total", "Transactions rolled back, by database.", "database"),
		databaseSize:     d("database_size_bytes", "Size of each database.", "database"),
		archived:         d("archiver_archived_total", "WAL files PostgreSQL handed to the archive command successfully."),
		archiveFailed:    d("archiver_failed_total", "Failed attempts of the archive command."),
		lastArchived:     d("archiver_last_archived_timestamp_seconds", "When the last WAL file was archived, in seconds since the epoch (0: never)."),
		lastArchiveFailed: d("archiver_last_failed_timestamp_seconds",
			"When the archive command last failed, in seconds since the epoch (0: never)."),
		slotRetained: d("replication_slot_retained_wal_bytes", "WAL bytes a replication slot holds back from removal.", "slot"),
		slotActive:   d("replication_slot_active", "1 while a replication slot's consumer is connected.", "slot"),
		walBytes:     d("wal_bytes_total", "WAL bytes this PostgreSQL generated since its statistics began (pg_stat_wal); rate() is the WAL rate."),
		walDirectory: d("wal_directory_bytes", "Size of pg_wal."),
	}
}

// Describe sends every descriptor.
func (c *pgCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.inRecovery, c.maxConnections, c.connections,
		c.lagBytes, c.lagSeconds, c.synchronous, c.replayLagSeconds, c.gateLagBytes,
		c.commits, c.rollbacks, c.databaseSize, c.archived, c.archiveFailed, c.lastArchived, c.lastArchiveFailed,
		c.slotRetained, c.slotActive, c.walBytes, c.walDirectory} {
		ch <- d
	}
}

// Collect queries PostgreSQL once per scrape over its local socket.
func (c *pgCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), pgScrapeTimeout)
	defer cancel()
	conn, err := c.a.localConn(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if err := c.collect(ctx, conn, ch); err != nil {
		c.a.log.V(1).Info("PostgreSQL metrics", "error", err.Error())
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}

// collect sends what each query returns; it stops at the first failing
// query, so a scrape never mixes answers with gaps.
func (c *pgCollector) collect(ctx context.Context, conn *pgx.Conn, ch chan<- prometheus.Metric) error {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	var inRecovery bool
	var maxConns, replayLag, walBytes, walDir float64
	err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('max_connections')::float8,
		CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()
			THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 0) ELSE 0 END,
		(SELECT wal_bytes::float8 FROM pg_stat_wal),
		(SELECT coalesce(sum(size), 0)::float8 FROM pg_ls_waldir())`).
		Scan(&inRecovery, &maxConns, &replayLag, &walBytes, &walDir)
	if err != nil {
		return err
	}
	gauge(c.inRecovery, boolValue(inRecovery))
	gauge(c.maxConnections, maxConns)
	if inRecovery {
		gauge(c.replayLagSeconds, replayLag)
	}
	counter(c.walBytes, walBytes)
	gauge(c.walDirectory, walDir)

	// Client connections by state; the usual states always have a series,
	// so a graph of idle connections does not vanish at zero.
	byState := map[string]float64{"active": 0, "idle": 0, "idle in transaction": 0}
	rows, _ := conn.Query(ctx, `SELECT coalesce(state, 'unknown'), count(*)::float8 FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1`)
	var state string
	var n float64
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { byState[state] = n; return nil }); err != nil {
		return err
	}
	for s, n := range byState {
		gauge(c.connections, n, s)
	}

	var db string
	var commits, rollbacks, size float64
	rows, _ = conn.Query(ctx, `SELECT datname, xact_commit::float8, xact_rollback::float8, pg_database_size(datid)::float8
		FROM pg_stat_database WHERE datname IS NOT NULL AND datname NOT IN ('template0', 'template1')`)
	if _, err := pgx.ForEachRow(rows, []any{&db, &commits, &rollbacks, &size}, func() error {
		counter(c.commits, commits, db)
		counter(c.rollbacks, rollbacks, db)
		gauge(c.databaseSize, size, db)
		return nil
	}); err != nil {
		return err
	}

	var archived, failed, lastArchived, lastFailed float64
	if err := conn.QueryRow(ctx, `SELECT archived_count::float8, failed_count::float8,
		coalesce(extract(epoch FROM last_archived_time)::float8, 0), coalesce(extract(epoch FROM last_failed_time)::float8, 0)
		FROM pg_stat_archiver`).Scan(&archived, &failed, &lastArchived, &lastFailed); err != nil {
		return err
	}
	counter(c.archived, archived)
	counter(c.archiveFailed, failed)
	gauge(c.lastArchived, lastArchived)
	gauge(c.lastArchiveFailed, lastFailed)

	// A slot holds WAL from its restart_lsn to the server's newest position:
	// the leader's write position, a follower's received one.
	var slot string
	var active bool
	var retained float64
	rows, _ = conn.Query(ctx, `SELECT slot_name::text, active, coalesce(pg_wal_lsn_diff(
			CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
			ELSE pg_current_wal_lsn() END, restart_lsn)::float8, 0)
		FROM pg_replication_slots`)
	if _, err := pgx.ForEachRow(rows, []any{&slot, &active, &retained}, func() error {
		gauge(c.slotRetained, max(0, retained), slot)
		gauge(c.slotActive, boolValue(active), slot)
		return nil
	}); err != nil {
		return err
	}

	if inRecovery {
		return nil
	}
	return c.collectReplication(ctx, conn, gauge)
}

// collectReplication sends the leader's view of its followers and of the
// commit gate. Only members' connections count: a base backup's WAL
// stream (application_name regent_backup) is not a follower.
func (c *pgCollector) collectReplication(ctx context.Context, conn *pgx.Conn, gauge func(*prometheus.Desc, float64, ...string)) error {
	var app, syncState string
	var lagBytes, lagSeconds float64
	rows, _ := conn.Query(ctx, `SELECT application_name, coalesce(sync_state, ''),
			pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(replay_lsn, flush_lsn, write_lsn, sent_lsn))::float8,
			coalesce(extract(epoch FROM replay_lag)::float8, 0), coalesce(extract(epoch FROM now() - reply_time)::float8, 0)
		FROM pg_stat_replication WHERE coalesce(replay_lsn, flush_lsn, write_lsn, sent_lsn) IS NOT NULL`)
	var sinceReply float64
	_, err := pgx.ForEachRow(rows, []any{&app, &syncState, &lagBytes, &lagSeconds, &sinceReply}, func() error {
		lagBytes = max(0, lagBytes)
		switch {
		case app == names.CommitGate:
			gauge(c.gateLagBytes, lagBytes)
		case isMember(c.a.cfg.Cluster, names.SlotPod(app)):
			// Followers name themselves by their slot (names.Slot).
			app = names.SlotPod(app)
			// replay_lag is as old as the follower's last reply: one that
			// stopped answering is at least that far behind.
			if lagBytes == 0 {
				lagSeconds = 0
			} else {
				lagSeconds = max(lagSeconds, sinceReply)
			}
			gauge(c.lagBytes, lagBytes, app)
			gauge(c.lagSeconds, lagSeconds, app)
			gauge(c.synchronous, boolValue(syncState == "sync" || syncState == "quorum"), app)
		}
		return nil
	})
	return err
}

func isMember(cluster, pod string) bool {
	_, ok := names.Ordinal(cluster, pod)
	return ok
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
