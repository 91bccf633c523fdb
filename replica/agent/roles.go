package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/scram"
)

// localConn logs in to the local PostgreSQL as postgres.
func (a *Agent) localConn(ctx context.Context) (*pgx.Conn, error) {
	return a.localConnTo(ctx, "postgres")
}

// localConnTo logs in to database of the local PostgreSQL as postgres.
func (a *Agent) localConnTo(ctx context.Context, database string) (*pgx.Conn, error) {
	pw, err := a.password("superuser-password")
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database, cfg.Password = a.cfg.RunDir, uint16(names.PortPostgres), "postgres", database, pw
	// The agent's own writes (roles at bootstrap) must not wait for the
	// commit gate: it connects as the replication role they create.
	cfg.RuntimeParams["synchronous_commit"] = "local"
	return pgx.ConnectConfig(ctx, cfg)
}

// ensureRoles runs bootstrapRoles until it has succeeded once.
func (a *Agent) ensureRoles(ctx context.Context) error {
	a.ls.mu.Lock()
	done := a.ls.rolesDone
	a.ls.mu.Unlock()
	if done {
		return nil
	}
	if err := a.bootstrapRoles(ctx); err != nil {
		return err
	}
	a.ls.mu.Lock()
	a.ls.rolesDone = true
	a.ls.mu.Unlock()
	return nil
}

// bootstrapRoles creates, on the first leader, the replication role and
// the application's role and database, with the passwords of their
// Secrets. It is idempotent.
func (a *Agent) bootstrapRoles(ctx context.Context) error {
	conn, err := a.localConn(ctx)
	if err != nil {
		return fmt.Errorf("connect to create roles: %w", err)
	}
	defer conn.Close(ctx)
	replPW, err := a.password("replication-password")
	if err != nil {
		return err
	}
	appPW, err := a.password("app-password")
	if err != nil {
		return err
	}
	// A password that cannot go as a SCRAM verifier (see scram.Verifier)
	// goes in clear text: this session's statements are not logged.
	if _, err := conn.Exec(ctx, "SET log_statement = 'none'"); err != nil {
		return fmt.Errorf("keep the roles' passwords out of the log: %w", err)
	}
	role := func(name, attrs, pw string) error {
		ident := pgx.Identifier{name}.Sanitize()
		if verifier, ok, err := scram.Verifier(pw); err != nil {
			return err
		} else if ok {
			pw = verifier
		}
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
			return err
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		_, err := conn.Exec(ctx, fmt.Sprintf("%s ROLE %s %s PASSWORD %s", verb, ident, attrs, literal(pw)))
		return err
	}
	if err := role(names.ReplicationUser, "WITH REPLICATION LOGIN", replPW); err != nil {
		return fmt.Errorf("replication role: %w", err)
	}
	if err := role(a.cfg.AppOwner, "WITH LOGIN", appPW); err != nil {
		return fmt.Errorf("application role: %w", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", a.cfg.AppDatabase).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s",
			pgx.Identifier{a.cfg.AppDatabase}.Sanitize(), pgx.Identifier{a.cfg.AppOwner}.Sanitize())); err != nil {
			return fmt.Errorf("application database: %w", err)
		}
	}
	a.log.Info("Created the replication and application roles", "database", a.cfg.AppDatabase, "owner", a.cfg.AppOwner)
	return nil
}

// literal quotes a string as an SQL literal (standard_conforming_strings
// is on in every supported PostgreSQL).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ensureSlot creates the physical replication slot of a follower.
func (a *Agent) ensureSlot(ctx context.Context, pod string) error {
	conn, err := a.localConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1)
		WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, names.Slot(pod))
	return err
}
