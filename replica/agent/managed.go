package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/periodic"
	"github.com/regent-dev/regent/replica/api"
)

// The declared roles and databases (docs/api.md, "Roles and databases"):
// the operator writes them to Secret <cluster>-managed, passwords as SCRAM
// verifiers; the leader's agent applies them to its PostgreSQL and says how
// each went in /status, which the operator copies to the ReplicaSet.

// managedRetry is how often a leader applies again when something failed
// (a role that still owns objects, a database someone is connected to).
const managedRetry = 30 * time.Second

// managedState is the desired version and the last result.
type managedState struct {
	mu sync.Mutex
	// data is the Secret's managed.json; nil without the Secret.
	data []byte
	// result is the last application, epoch the leadership term it ran in.
	result *api.ManagedResult
	epoch  int64
	// changed wakes keepManaged.
	changed chan struct{}
}

func (m *managedState) wake() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// watchManaged follows Secret <cluster>-managed.
func (a *Agent) watchManaged(ctx context.Context) {
	set := func(obj any) {
		var data []byte
		if secret, ok := obj.(*corev1.Secret); ok {
			data = secret.Data[names.ManagedKey]
		}
		a.managed.mu.Lock()
		a.managed.data = data
		a.managed.mu.Unlock()
		a.managed.wake()
	}
	lw := cache.NewListWatchFromClient(a.cfg.Client.CoreV1().RESTClient(), "secrets", a.cfg.Namespace,
		fields.OneTermEqualSelector("metadata.name", names.ManagedSecret(a.cfg.Cluster)))
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{AddFunc: set, UpdateFunc: func(_, obj any) { set(obj) },
			DeleteFunc: func(any) { set(nil) }}})
	go informer.RunWithContext(ctx)
}

// keepManaged applies the declared roles and databases while the agent
// leads and serves: on every change of the Secret, once per leadership
// term (a new leader may lack what the old one applied last), and every
// managedRetry while an item failed.
func (a *Agent) keepManaged(ctx context.Context) {
	periodic.Run(ctx, time.Second, a.managed.changed, a.applyManagedIfDue)
}

// applyManagedIfDue applies the Secret's version unless this leadership
// term has it already (and nothing of it failed less than managedRetry ago).
func (a *Agent) applyManagedIfDue(ctx context.Context) {
	if ok, _, _ := a.ready(); !ok || a.Status().Mode != api.ModeLeader {
		return
	}
	a.managed.mu.Lock()
	data, last, lastEpoch := a.managed.data, a.managed.result, a.managed.epoch
	a.managed.mu.Unlock()
	if data == nil {
		return
	}
	epoch := a.Status().Epoch
	version := api.ManagedVersion(data)
	if last != nil && last.Version == version && lastEpoch == epoch &&
		(!anyFailed(last) || a.clock.Since(last.AppliedAt.Time) < managedRetry) {
		return
	}
	var m api.Managed
	if err := json.Unmarshal(data, &m); err != nil {
		a.log.Error(err, "Refusing Secret "+names.ManagedSecret(a.cfg.Cluster))
		return
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	result := a.applyManaged(actx, m)
	cancel()
	result.Version = version
	a.managed.mu.Lock()
	a.managed.result, a.managed.epoch = result, epoch
	a.managed.mu.Unlock()
	a.log.Info("Applied the declared roles and databases", "version", version, "epoch", epoch, "failed", anyFailed(result))
}

// managedStatus is /status's Managed: the leader's last result.
func (a *Agent) managedStatus(mode api.Mode) *api.ManagedResult {
	if mode != api.ModeLeader {
		return nil
	}
	a.managed.mu.Lock()
	defer a.managed.mu.Unlock()
	return a.managed.result
}

// applyManaged applies m in the order dependencies need: roles, then the
// memberships among them, databases (whose owners exist by then), and the
// drops last (a role goes after the databases it owned).
func (a *Agent) applyManaged(ctx context.Context, m api.Managed) *api.ManagedResult {
	res := &api.ManagedResult{AppliedAt: metav1.NewTime(a.clock.Now())}
	conn, err := a.localConn(ctx)
	if err != nil {
		for _, r := range m.Roles {
			res.Roles = append(res.Roles, failedItem(r.Name, err))
		}
		for _, d := range m.Databases {
			res.Databases = append(res.Databases, failedItem(d.Name, err))
		}
		return res
	}
	defer func() { _ = conn.Close(context.Background()) }()
	roles := map[string]api.ManagedItem{}
	for _, r := range m.Roles {
		if r.Ensure != string(ensureAbsent) {
			roles[r.Name] = outcome(r.Name, applyRole(ctx, conn, r), "Applied")
		}
	}
	for _, r := range m.Roles {
		if it, ok := roles[r.Name]; ok && it.State == "Applied" {
			roles[r.Name] = outcome(r.Name, applyMemberships(ctx, conn, r), "Applied")
		}
	}
	dbs := map[string]api.ManagedItem{}
	for _, d := range m.Databases {
		if d.Ensure == string(ensureAbsent) {
			dbs[d.Name] = outcome(d.Name, exec(ctx, conn, "DROP DATABASE IF EXISTS "+ident(d.Name)), "Dropped")
			continue
		}
		dbs[d.Name] = outcome(d.Name, a.applyDatabase(ctx, conn, d), "Applied")
	}
	for _, r := range m.Roles {
		if r.Ensure == string(ensureAbsent) {
			roles[r.Name] = outcome(r.Name, exec(ctx, conn, "DROP ROLE IF EXISTS "+ident(r.Name)), "Dropped")
		}
	}
	for _, r := range m.Roles {
		res.Roles = append(res.Roles, roles[r.Name])
	}
	for _, d := range m.Databases {
		res.Databases = append(res.Databases, dbs[d.Name])
	}
	return res
}

const ensureAbsent = "Absent"

func anyFailed(r *api.ManagedResult) bool {
	for _, it := range append(slices.Clone(r.Roles), r.Databases...) {
		if it.State == "Failed" {
			return true
		}
	}
	return false
}

// applyRole creates the role if needed and sets its attributes; the
// password only when the stored verifier differs.
func applyRole(ctx context.Context, conn *pgx.Conn, r api.ManagedRole) error {
	var stored *string
	err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", r.Name).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		err = exec(ctx, conn, "CREATE ROLE "+ident(r.Name))
	}
	if err != nil {
		return err
	}
	login := "NOLOGIN"
	if r.Login {
		login = "LOGIN"
	}
	if err := exec(ctx, conn, fmt.Sprintf("ALTER ROLE %s WITH %s CONNECTION LIMIT %d", ident(r.Name), login, r.ConnectionLimit)); err != nil {
		return err
	}
	if r.PasswordVerifier != "" && (stored == nil || *stored != r.PasswordVerifier) {
		// A verifier, never the password: nothing to leak into logs.
		return exec(ctx, conn, fmt.Sprintf("ALTER ROLE %s PASSWORD %s", ident(r.Name), literal(r.PasswordVerifier)))
	}
	return nil
}

// applyMemberships grants the listed roles and revokes the others.
func applyMemberships(ctx context.Context, conn *pgx.Conn, r api.ManagedRole) error {
	rows, _ := conn.Query(ctx, `SELECT g.rolname::text FROM pg_auth_members m
		JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1`, r.Name)
	current, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range r.InRoles {
		if !slices.Contains(current, g) {
			errs = append(errs, exec(ctx, conn, fmt.Sprintf("GRANT %s TO %s", ident(g), ident(r.Name))))
		}
	}
	for _, g := range current {
		if !slices.Contains(r.InRoles, g) {
			errs = append(errs, exec(ctx, conn, fmt.Sprintf("REVOKE %s FROM %s", ident(g), ident(r.Name))))
		}
	}
	return errors.Join(errs...)
}

// applyDatabase creates the database or gives it its owner, then its
// extensions, inside it.
func (a *Agent) applyDatabase(ctx context.Context, conn *pgx.Conn, d api.ManagedDatabase) error {
	var owner string
	err := conn.QueryRow(ctx, "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", d.Name).Scan(&owner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		create := "CREATE DATABASE " + ident(d.Name)
		if d.Owner != "" {
			create += " OWNER " + ident(d.Owner)
		}
		err = exec(ctx, conn, create)
	case err == nil && d.Owner != "" && owner != d.Owner:
		err = exec(ctx, conn, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", ident(d.Name), ident(d.Owner)))
	}
	if err != nil || len(d.Extensions) == 0 {
		return err
	}
	db, err := a.localConnTo(ctx, d.Name)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close(context.Background()) }()
	var errs []error
	for _, e := range d.Extensions {
		if err := exec(ctx, db, "CREATE EXTENSION IF NOT EXISTS "+ident(e)); err != nil {
			errs = append(errs, fmt.Errorf("extension %s: %w", e, err))
		}
	}
	return errors.Join(errs...)
}

func exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	_, err := conn.Exec(ctx, sql)
	return err
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// outcome is an item's state: ok when err is nil, else Failed with
// PostgreSQL's message.
func outcome(name string, err error, ok string) api.ManagedItem {
	if err != nil {
		return failedItem(name, err)
	}
	return api.ManagedItem{Name: name, State: ok}
}

func failedItem(name string, err error) api.ManagedItem {
	msg := err.Error()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg = pgErr.Message
		if pgErr.Detail != "" {
			msg += ": " + pgErr.Detail
		}
	}
	return api.ManagedItem{Name: name, State: "Failed", Message: msg}
}
