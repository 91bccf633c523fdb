package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walarchive"
	"github.com/regent-dev/regent/replica/walship"
)

// wal-push and wal-fetch are PostgreSQL's archive_command and
// restore_command (docs/data-plane.md). PostgreSQL runs them with PGDATA as the
// working directory; their exit code is all it reads, and stderr goes to
// its log.

func newWALPushCommand() *cobra.Command {
	var dir string
	var keep int
	var ship bool
	c := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive a WAL file (PostgreSQL's archive_command)",
		Long: "wal-push stores the WAL file at PATH (%p) in the pod's WAL archive on the data\n" +
			"volume, durably, keeping the newest --keep segments. The agents serve the\n" +
			"archive to followers that fell behind.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if dir == "" {
				return ExitError{Code: 2, Err: errors.New("--archive-dir is required")}
			}
			return walarchive.Archive{Dir: dir, Keep: keep, Ship: ship}.Push(args[0], filepath.Base(args[0]))
		},
	}
	c.Flags().StringVar(&dir, "archive-dir", "", "the WAL archive directory")
	c.Flags().IntVar(&keep, "keep", walarchive.DefaultKeep, "segments to keep (16 MiB each)")
	c.Flags().BoolVar(&ship, "ship", false, "an object store takes the archive: prune what it holds first")
	return c
}

// errNotArchived makes wal-fetch exit 1 quietly: PostgreSQL asks for files
// that do not exist yet all the time, then streams instead.
var errNotArchived = ExitError{Code: 1, Err: errors.New("")}

func newWALFetchCommand() *cobra.Command {
	var runDir string
	c := &cobra.Command{
		Use:   "wal-fetch NAME PATH",
		Short: "Restore a WAL file through the local agent (PostgreSQL's restore_command)",
		Long: "wal-fetch asks the local agent for the WAL file NAME (%f), which it gets from\n" +
			"the current leader's archive, and writes it to PATH (%p). It exits 1 when the\n" +
			"leader does not have it, so PostgreSQL streams instead.",
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			name, dst := args[0], args[1]
			if !walarchive.ValidName(name) {
				return ExitError{Code: 2, Err: fmt.Errorf("%q is not a WAL file name", name)}
			}
			sock := filepath.Join(runDir, names.AgentSocketName)
			client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", sock)
				},
			}}
			resp, err := client.Get("http://agent/wal/" + name)
			if err != nil {
				return ExitError{Code: 1, Err: fmt.Errorf("wal-fetch %s: %w", name, err)}
			}
			defer resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
			case http.StatusNotFound:
				return errNotArchived
			default:
				var b [300]byte
				n, _ := resp.Body.Read(b[:])
				return ExitError{Code: 1, Err: fmt.Errorf("wal-fetch %s: %s: %s", name, resp.Status, b[:n])}
			}
			if err := walarchive.Restore(resp.Body, resp.ContentLength, dst); err != nil {
				_ = os.Remove(dst)
				return ExitError{Code: 1, Err: fmt.Errorf("wal-fetch %s: %w", name, err)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&runDir, "run-dir", envOr("REGENT_RUN_DIR", names.SocketDir), "directory of the agent's socket ($REGENT_RUN_DIR)")
	return c
}

// restoreFatal makes wal-restore exit 126: PostgreSQL aborts a
// recovery whose restore_command exits above 125, where any other failure
// would read as the end of the WAL and promote too early.
const restoreFatal = 126

func newWALRestoreCommand() *cobra.Command {
	var place, secrets string
	c := &cobra.Command{
		Use:   "wal-restore NAME PATH",
		Short: "Restore a WAL file from the object store (restore_command of a restore)",
		Long: "wal-restore reads the WAL file NAME (%f) from the object store a cluster is\n" +
			"restored from, checks its SHA-256 and writes it to PATH (%p). It exits 1 when the\n" +
			"store does not have it (the end of the WAL), and 126 when the store cannot be\n" +
			"read or the file is corrupt, which makes PostgreSQL abort the recovery rather\n" +
			"than end it early.",
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			name, dst := args[0], args[1]
			if !walarchive.ValidName(name) {
				return ExitError{Code: restoreFatal, Err: fmt.Errorf("%q is not a WAL file name", name)}
			}
			store, err := openObjectStore(place, secrets)
			if err == nil && store == nil {
				err = errors.New("--object-store is required")
			}
			if err != nil {
				return ExitError{Code: restoreFatal, Err: fmt.Errorf("wal-restore: %w", err)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r, err := store.Get(ctx, walship.Key(name), "")
			if errors.Is(err, objectstore.ErrNotFound) {
				return errNotArchived
			}
			if err != nil {
				return ExitError{Code: restoreFatal, Err: fmt.Errorf("wal-restore %s: %w", name, err)}
			}
			defer r.Close()
			if err := walarchive.Restore(r, -1, dst); err != nil {
				_ = os.Remove(dst)
				return ExitError{Code: restoreFatal, Err: fmt.Errorf("wal-restore %s: %w", name, err)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&place, "object-store", "", "the store, as JSON {endpoint, bucket, path, region}")
	c.Flags().StringVar(&secrets, "object-store-secrets", names.RecoveryStoreSecretsPath, "directory of the store's credentials")
	return c
}
