package instance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DataState is what a data directory holds.
type DataState string

const (
	// DataEmpty means the directory is missing or empty: initdb or a base
	// backup may fill it. (PGDATA is a subdirectory of the volume, so a
	// volume's lost+found never gets in the way.)
	DataEmpty DataState = "Empty"
	// DataReady means a PostgreSQL data directory of the version this
	// image runs.
	DataReady DataState = "Ready"
)

// ErrForeignData says that the data directory holds something Regent will
// not touch: another major version, or files that are not a PostgreSQL
// data directory. Nothing is ever deleted on Regent's own initiative.
type ErrForeignData struct {
	Dir, Why string
}

func (e *ErrForeignData) Error() string {
	return fmt.Sprintf("data directory %s: %s; Regent does not delete data on its own: move it away or restore a backup", e.Dir, e.Why)
}

// inspect reports the state of dir for PostgreSQL major version major.
func inspect(dir, major string) (DataState, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return DataEmpty, nil
	}
	if err != nil {
		return "", err
	}
	if len(entries) == 0 {
		return DataEmpty, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err != nil {
		return "", &ErrForeignData{Dir: dir, Why: "it is not empty and has no PG_VERSION (not a PostgreSQL data directory)"}
	}
	if v := strings.TrimSpace(string(b)); v != major {
		return "", &ErrForeignData{Dir: dir, Why: fmt.Sprintf("it holds PostgreSQL %s data and this image runs PostgreSQL %s", v, major)}
	}
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err != nil {
		return "", &ErrForeignData{Dir: dir, Why: "global/pg_control is missing (an incomplete or corrupt data directory)"}
	}
	return DataReady, nil
}

// removeStaleLockFiles removes the lock files PostgreSQL takes at start
// (postmaster.pid in the data directory, .s.PGSQL.<port>.lock beside its
// socket) when the process they name is not a live postgres: a postmaster
// killed with its container (the whole container, instance included,
// restarted) leaves them behind, and while that process is a zombie not
// yet reaped, or its PID went to another program of the same user,
// PostgreSQL refuses to start ("lock file already exists"). A live
// postgres keeps its files: two postmasters must never share the data.
func removeStaleLockFiles(paths ...string) (removed []string, err error) {
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, err
		}
		first, _, _ := strings.Cut(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(first))
		if err != nil || pid <= 0 || livePostgres(pid) {
			continue // a live postmaster's, or not ours to judge: PostgreSQL says what is wrong
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, path)
	}
	return removed, nil
}

// livePostgres: pid is a running (not zombie) process named postgres.
func livePostgres(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return false
	}
	comm, state := s[open+1:end], s[end+2]
	return comm == "postgres" && state != 'Z' && state != 'X'
}
