package instance

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/regent-dev/regent/internal/waitfor"
)

// The agent drives instance only through the socket: the whole life of a
// leader, through the client.
func TestAPIDrivesALeader(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.8")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = in.Serve(ctx, in.cfg.SocketDir) }()
	c := NewClient(in.cfg.SocketDir)
	waitfor.Condition(t, 5*time.Second, "API socket", func() error {
		_, err := c.Status(t.Context())
		return err
	})
	if fi, err := os.Stat(filepath.Join(in.cfg.SocketDir, SocketName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v: only the pod's own user may drive PostgreSQL", fi.Mode(), err)
	}

	st, err := c.Status(t.Context())
	if err != nil || st.Data != string(DataEmpty) || st.Running {
		t.Fatalf("status of an empty instance %+v, %v", st, err)
	}
	if err := c.Initdb(t.Context()); err != nil {
		t.Fatal(err)
	}
	var apiErr *APIError
	if err := c.Initdb(t.Context()); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Errorf("a second initdb: %v", err)
	}
	if err := c.Start(t.Context(), StartOptions{Role: RoleLeader, Deadline: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(t.Context(), time.Now().Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status(t.Context())
	if err != nil || !st.Running || st.Role != RoleLeader || st.InRecovery || st.WriteLSN == 0 || st.Deadline == nil {
		t.Fatalf("leader status %+v, %v", st, err)
	}
	lsn, err := c.Stop(t.Context(), StopFast)
	if err != nil || lsn == 0 {
		t.Fatalf("stop: %s, %v", lsn, err)
	}
	if _, err := c.Stop(t.Context(), "gently"); !errors.As(err, &apiErr) {
		t.Errorf("a bad stop mode: %v", err)
	}
}

func TestAPIReportsForeignData(t *testing.T) {
	in := newInstance(t, "pod-0", "127.0.10.9")
	if err := os.MkdirAll(in.cfg.PGData, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.cfg.PGData, "PG_VERSION"), []byte("13\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = in.Serve(ctx, in.cfg.SocketDir) }()
	c := NewClient(in.cfg.SocketDir)
	var err error
	waitfor.Condition(t, 5*time.Second, "API answers", func() error {
		err = c.Start(t.Context(), StartOptions{Role: RoleFollower})
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return nil
		}
		return err
	})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "ForeignData" || apiErr.Status != http.StatusUnprocessableEntity {
		t.Fatalf("start on PostgreSQL 13 data: %v", err)
	}
}

// The tools that take a conninfo get its password through their
// environment: a process's arguments are readable by every user of the node.
func TestToolsGetNoPasswordOnTheirCommandLine(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "seen")
	script := "#!/bin/sh\necho \"args: $*\" > " + out + "\necho \"env: $PGPASSWORD\" >> " + out + "\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &runner{binDir: dir, log: logr.Discard(), children: processChildren}
	for _, tc := range []struct{ conninfo, password string }{
		{"host=/run port=5433 user=regent_replication password=s3cret application_name=db_1", "s3cret"},
		{`host=/run password='a b\'c\\d' user=postgres`, `a b'c\d`},
		{"host=/run user=postgres", ""},
	} {
		if _, err := r.runConninfo(t.Context(), 10*time.Second, "pg_basebackup", "--dbname", tc.conninfo, "--no-password"); err != nil {
			t.Fatal(err)
		}
		seen, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		args, env, _ := strings.Cut(string(seen), "\n")
		if strings.Contains(args, "password=") || (tc.password != "" && strings.Contains(args, tc.password)) {
			t.Errorf("the password is on the command line: %s", args)
		}
		if !strings.Contains(args, "--dbname=host=/run") || !strings.Contains(args, "--no-password") {
			t.Errorf("the other arguments did not arrive: %s", args)
		}
		if got := strings.TrimSpace(strings.TrimPrefix(env, "env: ")); got != tc.password {
			t.Errorf("PGPASSWORD %q, want %q", got, tc.password)
		}
	}
}
