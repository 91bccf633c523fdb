// Package backup is the layout of base backups in the object store and
// the two ways through it (docs/backup.md): Upload streams pg_basebackup's
// tar into the store and checks what the store then holds, and Commit
// writes the backup's manifest last, so that a backup without a manifest
// was never finished; Restore brings a backup back into an empty data
// directory.
//
// In the store, under the cluster's path:
//
//	base/<id>/data.tar.zst   pg_basebackup -Ft -X fetch: the data and the WAL to make it consistent
//	base/<id>/backup.json    Manifest
package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/replica/objectstore"
)

// Prefix is where base backups live in the store.
const Prefix = "base/"

// DataKey is a backup's tar.
func DataKey(id string) string { return Prefix + id + "/data.tar.zst" }

// ManifestKey is a backup's manifest, written last.
func ManifestKey(id string) string { return Prefix + id + "/backup.json" }

// NewID names a backup by its start time, so that names sort by age.
func NewID(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)

// ValidID reports whether id is a backup's name.
func ValidID(id string) bool { return idRE.MatchString(id) }

// Manifest describes one finished backup.
type Manifest struct {
	ID string `json:"id"`
	// Cluster is <namespace>/<name>; Member the pod it was taken on, and
	// FromStandby whether that pod was a follower.
	Cluster     string `json:"cluster,omitempty"`
	Member      string `json:"member,omitempty"`
	FromStandby bool   `json:"fromStandby"`
	// SystemIdentifier and PostgresMajor say which database and version
	// it can restore.
	SystemIdentifier string `json:"systemIdentifier"`
	PostgresMajor    string `json:"postgresMajor"`
	// Timeline, StartLSN and EndLSN: the WAL the backup spans. Restored,
	// it is consistent at EndLSN; WAL from the store takes it further.
	Timeline int64   `json:"timeline"`
	StartLSN lsn.LSN `json:"startLSN"`
	EndLSN   lsn.LSN `json:"endLSN"`
	// StartTime and EndTime are the backup's (the server's clock at its
	// start, this pod's at its end).
	StartTime time.Time `json:"startTime"`
	EndTime   time.Time `json:"endTime"`
	// Data is the tar's object: its stored size and the SHA-256 of the
	// uncompressed tar, checked after the upload and at every restore.
	Data objectstore.Object `json:"data"`
}

// Info says where a backup was taken.
type Info struct {
	ID, Cluster, Member, SystemIdentifier, PostgresMajor string
	FromStandby                                          bool
}

// Upload streams the tar pg_basebackup writes to tarStream (-Ft -D -) into
// the store as backup info.ID and reads it back to check it; Commit then
// makes it a backup. progress, if set, is called with the tar bytes read
// so far.
func Upload(ctx context.Context, store *objectstore.Store, tarStream io.Reader, info Info, sizeHint int64, progress func(int64)) (Manifest, error) {
	if !ValidID(info.ID) {
		return Manifest{}, fmt.Errorf("backup ID %q: want a UTC time such as 20260102T150405Z", info.ID)
	}
	m := Manifest{ID: info.ID, Cluster: info.Cluster, Member: info.Member, FromStandby: info.FromStandby,
		SystemIdentifier: info.SystemIdentifier, PostgresMajor: info.PostgresMajor}

	// The tar passes through a reader that picks backup_label and
	// backup_manifest out of it on the way to the store.
	pr, pw := io.Pipe()
	found := make(chan error, 1)
	go func() {
		err := m.readLabels(pr)
		_, _ = io.Copy(io.Discard, pr)
		found <- err
	}()
	src := io.TeeReader(&counting{r: tarStream, progress: progress}, pw)
	obj, err := store.PutStream(ctx, DataKey(info.ID), src, objectstore.StreamOptions{SizeHint: sizeHint})
	pw.CloseWithError(io.EOF)
	if lerr := <-found; err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("backup %s: %w", info.ID, err)
	}
	m.Data = obj
	if err := Verify(ctx, store, m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Commit writes m's manifest, the last object of a backup: before it,
// the backup does not exist.
func Commit(ctx context.Context, store *objectstore.Store, m Manifest) (Manifest, error) {
	m.EndTime = time.Now().UTC()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	if _, err := store.PutPlain(ctx, ManifestKey(m.ID), data, "application/json"); err != nil {
		return Manifest{}, fmt.Errorf("backup %s: manifest: %w", m.ID, err)
	}
	return m, nil
}

// Verify reads a backup's data back from the store and checks its
// SHA-256 and that it is a whole tar with the backup's label.
func Verify(ctx context.Context, store *objectstore.Store, m Manifest) error {
	r, err := store.Get(ctx, DataKey(m.ID), m.Data.SHA256)
	if err != nil {
		return fmt.Errorf("verify backup %s: %w", m.ID, err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	label := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("verify backup %s: %w", m.ID, err)
		}
		label = label || h.Name == "backup_label"
	}
	// The tar's end is not the stream's: read to the end, where the
	// SHA-256 is checked.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("verify backup %s: %w", m.ID, err)
	}
	if !label {
		return fmt.Errorf("verify backup %s: the tar has no backup_label", m.ID)
	}
	return nil
}

// readLabels reads a pg_basebackup tar for backup_label (start position,
// timeline, time) and backup_manifest (end position).
func (m *Manifest) readLabels(r io.Reader) error {
	tr := tar.NewReader(r)
	var label, manifest bool
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading pg_basebackup's tar: %w", err)
		}
		switch h.Name {
		case "backup_label":
			if err := m.parseLabel(tr); err != nil {
				return err
			}
			label = true
		case "backup_manifest":
			if err := m.parseManifest(tr); err != nil {
				return err
			}
			manifest = true
		}
	}
	switch {
	case !label:
		return errors.New("pg_basebackup's tar has no backup_label")
	case !manifest:
		return errors.New("pg_basebackup's tar has no backup_manifest")
	}
	return nil
}

// parseLabel reads backup_label:
//
//	START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//	START TIME: 2026-11-29 09:30:00 UTC
//	START TIMELINE: 1
func (m *Manifest) parseLabel(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch k {
		case "START WAL LOCATION":
			pos, _, _ := strings.Cut(v, " ")
			l, err := lsn.Parse(pos)
			if err != nil {
				return fmt.Errorf("backup_label: %w", err)
			}
			m.StartLSN = l
		case "START TIMELINE":
			tli, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("backup_label: %w", err)
			}
			m.Timeline = tli
		case "START TIME":
			if t, err := time.Parse("2006-01-02 15:04:05 MST", v); err == nil {
				m.StartTime = t.UTC()
			}
		}
	}
	return sc.Err()
}

// parseManifest reads backup_manifest's WAL ranges; the last one's end is
// where the restored data is consistent.
func (m *Manifest) parseManifest(r io.Reader) error {
	var bm struct {
		WALRanges []struct {
			Timeline int64  `json:"Timeline"`
			Start    string `json:"Start-LSN"`
			End      string `json:"End-LSN"`
		} `json:"WAL-Ranges"`
	}
	if err := json.NewDecoder(r).Decode(&bm); err != nil {
		return fmt.Errorf("backup_manifest: %w", err)
	}
	if len(bm.WALRanges) == 0 {
		return errors.New("backup_manifest has no WAL range")
	}
	end, err := lsn.Parse(bm.WALRanges[len(bm.WALRanges)-1].End)
	if err != nil {
		return fmt.Errorf("backup_manifest: %w", err)
	}
	m.EndLSN = end
	return nil
}

// List returns the store's finished backups, oldest first. A backup whose
// manifest cannot be read is reported in the error and left out.
func List(ctx context.Context, store *objectstore.Store) ([]Manifest, error) {
	objs, err := store.List(ctx, Prefix)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	var errs []error
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/backup.json") {
			continue
		}
		data, err := store.GetPlain(ctx, o.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.Key, err))
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Manifest) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(errs...)
}

// counting reports the bytes read through it.
type counting struct {
	r        io.Reader
	n        int64
	progress func(int64)
	last     time.Time
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && (err != nil || time.Since(c.last) > time.Second) {
		c.progress(c.n)
		c.last = time.Now()
	}
	return n, err
}

// Extract downloads backup m's data from the store into dir, an empty
// data directory, checking its SHA-256 as it goes. chown, if set, is
// applied to every file and directory made (the database's user when
// this runs as root).
func Extract(ctx context.Context, store *objectstore.Store, m Manifest, dir string, chown func(path string) error) error {
	r, err := store.Get(ctx, DataKey(m.ID), m.Data.SHA256)
	if err != nil {
		return fmt.Errorf("restore backup %s: %w", m.ID, err)
	}
	defer r.Close()
	if err := untar(r, dir, chown); err != nil {
		return fmt.Errorf("restore backup %s: %w", m.ID, err)
	}
	// The tar's end is not the stream's: read to the end, where the
	// SHA-256 is checked.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("restore backup %s: %w", m.ID, err)
	}
	return nil
}
