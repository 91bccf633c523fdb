package instance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
