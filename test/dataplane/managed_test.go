package dataplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/scram"
	"github.com/regent-dev/regent/internal/waitfor"
	"github.com/regent-dev/regent/replica/api"
)

// loginAs logs in to p's database analytics as role reporter, over TLS as
// a client would.
func (p *pod) loginAs(ctx context.Context, password string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 user=reporter password=%s dbname=analytics connect_timeout=3 sslmode=verify-full sslrootcert=%s",
		p.ip, password, p.caFile))
	if err != nil {
		return nil, err
	}
	cfg.TLSConfig.ServerName = p.name
	return pgx.ConnectConfig(ctx, cfg)
}

// declare writes the operator's Secret <cluster>-managed with m and waits
// until the leader's /status reports that version applied, returning its
// items by name.
func (c *cluster) declare(t *testing.T, leader *pod, m api.Managed) map[string]api.ManagedItem {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: names.ManagedSecret("db"), Namespace: c.ns, Labels: names.Labels("db")},
		Data: map[string][]byte{names.ManagedKey: data}}
	secrets := cs.CoreV1().Secrets(c.ns)
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		if _, err := secrets.Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	version := api.ManagedVersion(data)
	items := map[string]api.ManagedItem{}
	waitfor.Condition(t, 30*time.Second, "the leader applied version "+version, func() error {
		st, err := leader.status()
		if err != nil {
			return err
		}
		if st.Managed == nil || st.Managed.Version != version {
			return fmt.Errorf("applied %+v", st.Managed)
		}
		for _, it := range append(st.Managed.Roles, st.Managed.Databases...) {
			items[it.Name] = it
		}
		return nil
	})
	return items
}

func verifier(t *testing.T, password string) string {
	t.Helper()
	v, ok, err := scram.Verifier(password)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	return v
}

// The leader's agent keeps the declared roles and databases: created with
// their password, memberships, owner and extensions; changed; dropped with
// ensure Absent, and PostgreSQL's refusal reported per item. Followers get
// them through replication.
func TestDeclaredRolesAndDatabasesAreKeptOnTheLeader(t *testing.T) {
	c := newCluster(t, 2, "127.0.41")
	for _, p := range c.pods {
		waitfor.Condition(t, 90*time.Second, p.name+" ready", p.ready)
	}
	leader, follower := c.pods[0], c.pods[1]
	ctx := t.Context()
	want := func(items map[string]api.ManagedItem, states map[string]string) {
		t.Helper()
		for name, state := range states {
			if it := items[name]; it.State != state {
				t.Errorf("%s: %s (%s), want %s", name, it.State, it.Message, state)
			}
		}
	}

	m := api.Managed{
		Roles: []api.ManagedRole{
			{Name: "reporter", Ensure: "Present", Login: true, PasswordVerifier: verifier(t, "first-pw"),
				InRoles: []string{"pg_read_all_data"}, ConnectionLimit: -1},
			{Name: "readers", Ensure: "Present", Login: false, ConnectionLimit: -1},
		},
		Databases: []api.ManagedDatabase{{Name: "analytics", Ensure: "Present", Owner: "reporter", Extensions: []string{"pgcrypto", "citext"}}},
	}
	want(c.declare(t, leader, m), map[string]string{"reporter": "Applied", "readers": "Applied", "analytics": "Applied"})

	conn, err := leader.loginAs(ctx, "first-pw")
	if err != nil {
		t.Fatalf("reporter cannot log in to analytics: %v", err)
	}
	var owner, exts string
	var member, canLogin bool
	if err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba), (SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension),
		pg_has_role('reporter', 'pg_read_all_data', 'MEMBER'), (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'readers')
		FROM pg_database WHERE datname = current_database()`).Scan(&owner, &exts, &member, &canLogin); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	if owner != "reporter" || exts != "citext,pgcrypto,plpgsql" || !member || canLogin {
		t.Errorf("owner %s, extensions %s, reporter in pg_read_all_data %v, readers can log in %v", owner, exts, member, canLogin)
	}
	// The follower has them by replication: the same login works there.
	waitfor.Condition(t, 20*time.Second, "reporter logs in on the follower", func() error {
		conn, err := follower.loginAs(ctx, "first-pw")
		if err == nil {
			_ = conn.Close(ctx)
		}
		return err
	})

	// Changed: a new password, a connection limit, memberships moved.
	m.Roles[0].PasswordVerifier, m.Roles[0].ConnectionLimit = verifier(t, "second-pw"), 5
	m.Roles[0].InRoles = []string{"readers"}
	want(c.declare(t, leader, m), map[string]string{"reporter": "Applied", "readers": "Applied", "analytics": "Applied"})
	if conn, err := leader.loginAs(ctx, "first-pw"); err == nil {
		_ = conn.Close(ctx)
		t.Error("the old password still logs in")
	}
	conn, err = leader.loginAs(ctx, "second-pw")
	if err != nil {
		t.Fatalf("the new password does not log in: %v", err)
	}
	var limit int
	var inReaders, inReadAll bool
	if err := conn.QueryRow(ctx, `SELECT rolconnlimit, pg_has_role('reporter', 'readers', 'MEMBER'), pg_has_role('reporter', 'pg_read_all_data', 'MEMBER')
		FROM pg_roles WHERE rolname = 'reporter'`).Scan(&limit, &inReaders, &inReadAll); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	if limit != 5 || !inReaders || inReadAll {
		t.Errorf("connection limit %d, in readers %v, in pg_read_all_data %v; want 5, true, false", limit, inReaders, inReadAll)
	}

	// A role that still owns a database is not dropped: PostgreSQL's reason
	// is reported, the rest applied.
	m.Roles[0].Ensure = "Absent"
	items := c.declare(t, leader, m)
	want(items, map[string]string{"reporter": "Failed", "readers": "Applied", "analytics": "Applied"})
	if msg := items["reporter"].Message; !strings.Contains(msg, "cannot be dropped because some objects depend on it") {
		t.Errorf("reporter's message %q does not say why", msg)
	}
	// With the database dropped as well, both go, in that order.
	m.Databases[0].Ensure = "Absent"
	want(c.declare(t, leader, m), map[string]string{"reporter": "Dropped", "readers": "Applied", "analytics": "Dropped"})
	lc, err := leader.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close(ctx)
	var roles, dbs int
	if err := lc.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'reporter'),
		(SELECT count(*) FROM pg_database WHERE datname = 'analytics')`).Scan(&roles, &dbs); err != nil {
		t.Fatal(err)
	}
	if roles != 0 || dbs != 0 {
		t.Errorf("after the drop: %d roles reporter, %d databases analytics", roles, dbs)
	}

	// An owner that does not exist fails the database, not the others.
	m.Databases = append(m.Databases, api.ManagedDatabase{Name: "orphan", Ensure: "Present", Owner: "nobody"})
	items = c.declare(t, leader, m)
	want(items, map[string]string{"orphan": "Failed", "readers": "Applied"})
	if msg := items["orphan"].Message; !strings.Contains(msg, `role "nobody" does not exist`) {
		t.Errorf("orphan's message %q", msg)
	}
}
