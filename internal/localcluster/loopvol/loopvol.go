// Package loopvol gives the local cluster's volumes a real size: each is
// an ext4 filesystem in a sparse image file, loop-mounted on the volume's
// directory, so that a full volume fails writes with ENOSPC as a cloud
// disk would, and grows online when its claim does.
package loopvol

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Image is the image file of the volume at dir.
func Image(dir string) string { return filepath.Clean(dir) + ".img" }

// Create makes the volume at dir, of size bytes, and mounts it. It is
// idempotent: an existing image is mounted as it is.
func Create(dir string, size int64) error {
	img := Image(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if err := makeImage(img, size); err != nil {
			_ = os.Remove(img)
			return err
		}
	}
	if err := EnsureMounted(dir); err != nil {
		return err
	}
	if !Mounted(dir) {
		return fmt.Errorf("volume %s did not mount", dir)
	}
	// Every pod's user may write the volume's root, as with a directory.
	return os.Chmod(dir, 0o777)
}

func makeImage(img string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// No blocks reserved for root: the claim's size is the pods' to use.
	return run("mkfs.ext4", "-q", "-F", "-m", "0", img)
}

// Mounted reports whether dir is a mount point (its device differs from
// its parent's).
func Mounted(dir string) bool {
	var here, parent syscall.Stat_t
	if syscall.Stat(dir, &here) != nil || syscall.Stat(filepath.Dir(filepath.Clean(dir)), &parent) != nil {
		return false
	}
	return here.Dev != parent.Dev
}

// HasImage reports whether the volume at dir is an image (a volume made
// before images is a plain directory, and stays one).
func HasImage(dir string) bool {
	_, err := os.Stat(Image(dir))
	return err == nil
}

// EnsureMounted mounts the volume at dir unless it is (or has no image).
func EnsureMounted(dir string) error {
	if Mounted(dir) || !HasImage(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return run("mount", "-o", "loop", Image(dir), dir)
}

// Ready says whether a volume directory may be used: a directory with an
// image must have it mounted, or writes would land beside the volume.
func Ready(dir string) error {
	if HasImage(dir) && !Mounted(dir) {
		return fmt.Errorf("volume %s is not mounted yet", dir)
	}
	return nil
}

// Grow grows the volume at dir to size bytes, online.
func Grow(dir string, size int64) error {
	img := Image(dir)
	st, err := os.Stat(img)
	if err != nil {
		return err
	}
	if size <= st.Size() {
		return nil
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "--mountpoint", filepath.Clean(dir)).Output()
	if err != nil {
		return fmt.Errorf("find the loop device of %s: %w", dir, err)
	}
	dev := strings.TrimSpace(string(out))
	if err := run("losetup", "-c", dev); err != nil {
		return err
	}
	return run("resize2fs", dev)
}

// Unmount unmounts the volume at dir if it is mounted; lazily when busy, so
// that a stopped cluster never keeps its state directory from going.
func Unmount(dir string) error {
	if !Mounted(dir) {
		return nil
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	return nil
}

// Remove unmounts the volume at dir and deletes it with its image.
func Remove(dir string) error {
	if err := Unmount(dir); err != nil {
		return err
	}
	if err := os.Remove(Image(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.RemoveAll(dir)
}

// UnmountAll unmounts every volume with an image under root.
func UnmountAll(root string) error {
	images, err := filepath.Glob(filepath.Join(root, "*.img"))
	if err != nil {
		return err
	}
	var errs []error
	for _, img := range images {
		errs = append(errs, Unmount(strings.TrimSuffix(img, ".img")))
	}
	return errors.Join(errs...)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
