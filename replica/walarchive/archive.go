// Package walarchive keeps a pod's WAL archive: the segments and timeline
// history files PostgreSQL hands to `regent wal-push` (archive_mode=always,
// so followers archive what they receive too and a new leader's archive
// reaches back before its promotion), served to followers that fell behind
// their leader's retained WAL through `regent wal-fetch` and the agents
// (docs/data-plane.md).
//
// The archive lives on the data volume, beside PGDATA, and is bounded: it
// keeps the newest segments (Keep) and every history file (small, and
// needed to follow any timeline switch). With an object store (Ship), it
// is also the queue of what the leader has yet to upload: shipped
// segments go first, and only a store down for longer than Keep segments
// of WAL makes it drop one that was never shipped (docs/backup.md).
package walarchive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// DefaultKeep is how many segments an archive keeps: 64 of 16 MiB, 1 GiB.
const DefaultKeep = 64

// fileName matches what PostgreSQL archives and restores: segments
// (TTTTTTTTXXXXXXXXYYYYYYYY), partial segments, backup labels and timeline
// history files. Anything else is refused, so a name can never leave Dir.
var (
	fileName = regexp.MustCompile(`^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$`)
	segment  = regexp.MustCompile(`^[0-9A-F]{24}(\.partial)?$`)
)

// ErrNotFound is returned by Open for a file the archive does not hold.
var ErrNotFound = errors.New("not in the archive")

// ValidName reports whether name is a WAL file name PostgreSQL uses.
func ValidName(name string) bool { return fileName.MatchString(name) }

// Archive is one directory of archived WAL files.
type Archive struct {
	Dir  string
	Keep int
	// Ship says an object store takes the archive's files: prune removes
	// shipped segments before the others.
	Ship bool
}

// shippedDir holds an empty file per shipped file (the uploader runs in
// another process than wal-push, which prunes).
const shippedDir = ".shipped"

// Shipped reports whether name was recorded as held by the object store.
func (a Archive) Shipped(name string) bool {
	_, err := os.Stat(filepath.Join(a.Dir, shippedDir, name))
	return err == nil
}

// MarkShipped records that the object store holds name.
func (a Archive) MarkShipped(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%q is not a WAL file name", name)
	}
	dir := filepath.Join(a.Dir, shippedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), nil, 0o600)
}

// File is one archived file.
type File struct {
	Name    string
	Size    int64
	Shipped bool
}

// Files lists the archive's files in the order they were written: by
// position in the log, history files before the segments of their
// timeline.
func (a Archive) Files() ([]File, error) {
	entries, err := os.ReadDir(a.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []File
	for _, e := range entries {
		if !ValidName(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // pruned meanwhile
		}
		out = append(out, File{Name: e.Name(), Size: info.Size(), Shipped: a.Shipped(e.Name())})
	}
	slices.SortFunc(out, func(x, y File) int { return strings.Compare(order(x.Name), order(y.Name)) })
	return out, nil
}

// order sorts history files first (small, and needed to follow any
// timeline switch), then segments by position and timeline.
func order(name string) string {
	if strings.HasSuffix(name, ".history") {
		return "0" + name[:8]
	}
	return "1" + name[8:24] + name[:8] + name[24:]
}

// Push stores the file at src under name, durably: written to a temporary
// file, synced, renamed, and the directory synced. Pushing a file the
// archive already holds with the same content succeeds (PostgreSQL retries
// after a crash between archiving and recording it); different content is
// an error, since overwriting archived WAL could lose history.
func (a Archive) Push(src, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("wal-push: %q is not a WAL file name", name)
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	dst := filepath.Join(a.Dir, name)
	if have, err := os.ReadFile(dst); err == nil {
		if bytes.Equal(have, data) {
			return nil
		}
		return fmt.Errorf("wal-push: %s is already archived with different content; refusing to overwrite it", name)
	}
	// Room first: the archive never holds more than Keep segments, not
	// even for the moment between this one's arrival and the oldest's
	// removal.
	if segment.MatchString(name) {
		if err := a.prune(1); err != nil {
			return fmt.Errorf("wal-push: %w", err)
		}
	}
	tmp, err := os.CreateTemp(a.Dir, "."+name+".tmp-")
	if err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("wal-push: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("wal-push: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	if err := syncDir(a.Dir); err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	return a.prune(0)
}

// prune removes the oldest segments so that room more fit within Keep,
// shipped ones first when an object store takes them. Segments sort by
// their position in the log (the last 16 digits), then by timeline.
func (a Archive) prune(room int) error {
	keep := a.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	entries, err := os.ReadDir(a.Dir)
	if err != nil {
		return err
	}
	var segs []string
	for _, e := range entries {
		if segment.MatchString(e.Name()) {
			segs = append(segs, e.Name())
		}
	}
	if len(segs)+room <= keep {
		return nil
	}
	slices.SortFunc(segs, func(x, y string) int {
		return strings.Compare(x[8:24]+x[:8], y[8:24]+y[:8])
	})
	excess := len(segs) + room - keep
	var drop []string
	if a.Ship {
		for _, name := range segs {
			if len(drop) < excess && a.Shipped(name) {
				drop = append(drop, name)
			}
		}
	}
	for _, name := range segs {
		if len(drop) < excess && !slices.Contains(drop, name) {
			if a.Ship {
				// The store has been away for Keep segments of WAL:
				// the volume's budget wins over the store's continuity,
				// and the leader's window check reports the gap.
				fmt.Fprintf(os.Stderr, "wal-push: removing %s, which the object store does not have yet: the archive is at its budget of %d segments\n", name, keep)
			}
			drop = append(drop, name)
		}
	}
	for _, name := range drop {
		if err := os.Remove(filepath.Join(a.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		_ = os.Remove(filepath.Join(a.Dir, shippedDir, name))
	}
	return nil
}

// Open returns the archived file name and its size, or ErrNotFound.
func (a Archive) Open(name string) (io.ReadCloser, int64, error) {
	if !ValidName(name) {
		return nil, 0, fmt.Errorf("%q is not a WAL file name", name)
	}
	f, err := os.Open(filepath.Join(a.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// Restore writes data (size bytes, or whatever it holds for a negative
// size) to dst the way restore_command must: complete or not at all.
func Restore(data io.Reader, size int64, dst string) error {
	tmp := dst + ".regent-partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	n, err := io.Copy(f, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if size >= 0 && n != size {
		return fmt.Errorf("received %d of %d bytes", n, size)
	}
	return os.Rename(tmp, dst)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
