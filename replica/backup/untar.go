package backup

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// untar writes a pg_basebackup tar into dir. Only regular files and
// directories are expected (one tablespace, pg_wal inside); a name that
// would leave dir is refused.
func untar(r io.Reader, dir string, chown func(string) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue
		}
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("tar entry %q leaves the data directory", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			// The tar is a backup of a data directory that fitted on a
			// volume, and the volume bounds what it unpacks to.
			if _, err := io.Copy(f, tr); err != nil { //nolint:gosec // G110: see above
				_ = f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q: type %q is not a file or directory (tablespaces are not supported)", h.Name, h.Typeflag)
		}
		if chown != nil {
			if err := chown(path); err != nil {
				return err
			}
		}
	}
}
