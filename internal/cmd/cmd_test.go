package cmd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (string, error) {
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestWALPushArchivesAndRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "archive")
	seg := filepath.Join(dir, "000000010000000000000003")
	if err := os.WriteFile(seg, []byte("wal"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run("wal-push", "--archive-dir="+archive, seg); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(archive, "000000010000000000000003")); string(got) != "wal" {
		t.Fatalf("archived %q, want %q", got, "wal")
	}
	// PostgreSQL retries a push it did not record: same content is fine.
	if _, err := run("wal-push", "--archive-dir="+archive, seg); err != nil {
		t.Fatalf("pushing the same file again: %v", err)
	}
	if err := os.WriteFile(seg, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run("wal-push", "--archive-dir="+archive, seg); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("overwriting archived WAL: got %v", err)
	}
	bad := filepath.Join(dir, "postgresql.conf")
	if err := os.WriteFile(bad, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run("wal-push", "--archive-dir="+archive, bad); err == nil || !strings.Contains(err.Error(), "not a WAL file name") {
		t.Fatalf("pushing a non-WAL file: got %v", err)
	}
}

func TestWALFetchWithoutAgentFails(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	_, err := run("wal-fetch", "--run-dir="+t.TempDir(), "000000010000000000000003", dst)
	var exit ExitError
	if !errors.As(err, &exit) || exit.Code != 1 {
		t.Fatalf("got %v, want exit code 1", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a failed fetch left %s behind", dst)
	}
	if _, err := run("wal-fetch", "../../etc/passwd", dst); err == nil || !strings.Contains(err.Error(), "not a WAL file name") {
		t.Fatalf("fetching a path: got %v", err)
	}
}

func TestManagerRefusesBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"manager", "--image-pull-policy=Sometimes"}, `--image-pull-policy "Sometimes": want Always, IfNotPresent or Never`},
		{[]string{"manager", "--regent-image="}, "--regent-image must not be empty"},
		{[]string{"manager", "--postgres-image="}, "--postgres-image must not be empty"},
		{[]string{"manager", "--watch-namespaces=team-a,Team_B"}, `--watch-namespaces: "Team_B" is not a namespace name`},
		{[]string{"manager", "--network-policies", "--operator-namespace=regent-system"}, "--network-policies needs --operator-namespace"},
		{[]string{"manager", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"manager", "--leader-election-lease-duration=3s"}, "--leader-election-renew-deadline (3s) < --leader-election-lease-duration (3s)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := run(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestInstallCopiesTheBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bin")
	out, err := run("install", dir)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "regent")
	if !strings.Contains(out, dst) {
		t.Errorf("output %q does not name %s", out, dst)
	}
	self, _ := os.Executable()
	want, _ := os.ReadFile(self)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the installed file differs from the running binary")
	}
	info, _ := os.Stat(dst)
	if info.Mode().Perm()&0o111 == 0 {
		t.Errorf("installed file mode %v is not executable", info.Mode())
	}
	// Installing again replaces the file whole (the init container runs
	// again after every pod restart).
	if _, err := run("install", dir); err != nil {
		t.Fatalf("second install: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".regent-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestInstanceRefusesBadEnvironment(t *testing.T) {
	_, err := run("instance", "--pod-ip=not-an-ip", "--pod-name=", "--parameters={", "--superuser-password-file=/nonexistent",
		"--storage-size=lots")
	var exit ExitError
	if !errors.As(err, &exit) || exit.Code != 2 {
		t.Fatalf("got %v, want exit code 2", err)
	}
	for _, want := range []string{`--pod-ip "not-an-ip" is not an IP address`, "--pod-name is empty", "--parameters", "superuser password",
		`--storage-size "lots" is not a positive quantity`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestInstanceRefusesAMissingPostgres(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := run("instance", "--pod-ip=127.0.0.1", "--pod-name=db-0", "--superuser-password-file="+pw,
		"--pg-bindir="+t.TempDir())
	var exit ExitError
	if !errors.As(err, &exit) || exit.Code != 2 || !strings.Contains(err.Error(), "cannot tell the PostgreSQL version") {
		t.Fatalf("got %v, want exit code 2 saying PostgreSQL is missing", err)
	}
}

func TestAgentRefusesBadEnvironment(t *testing.T) {
	_, err := run("agent", "--pod-ip=nowhere", "--pod-name=", "--namespace=", "--cluster=")
	var exit ExitError
	if !errors.As(err, &exit) || exit.Code != 2 {
		t.Fatalf("got %v, want exit code 2", err)
	}
	for _, want := range []string{`--pod-ip "nowhere" is not an IP address`, "--pod-name is empty", "--namespace is empty", "--cluster is empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
