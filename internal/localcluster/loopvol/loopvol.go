// Package loopvol gives the local cluster's volumes a real size: each is
// an ext4 filesystem in a sparse image file, loop-mounted on the volume's
// directory, so that a full volume fails writes with ENOSPC as a cloud
// disk would, and grows when its claim does: online where the machine
// allows it, otherwise when a pod next starts with it, as Kubernetes does
// for volumes that only grow offline. Each change holds a lock on the
// image, so that the provisioner and the kubelets never race.
package loopvol

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	return mount(dir)
}

func mount(dir string) error {
	if Mounted(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return run("mount", "-o", "loop", Image(dir), dir)
}

// lock takes the volume's lock (an flock on its image), waiting for it.
func lock(dir string) (unlock func(), err error) {
	f, err := os.Open(Image(dir))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", Image(dir), err)
	}
	return func() { _ = f.Close() }, nil
}

// Ready says whether a volume directory may be used: a directory with an
// image must have it mounted, or writes would land beside the volume.
func Ready(dir string) error {
	if HasImage(dir) && !Mounted(dir) {
		return fmt.Errorf("volume %s is not mounted yet", dir)
	}
	return nil
}

// Grow grows the volume at dir to size bytes: its image at once, its
// filesystem online if it is mounted (or offline if not). Growing a mounted
// ext4 filesystem needs CAP_SYS_RESOURCE; without it the error says so, the
// image keeps its new size, and GrowPending reports the filesystem's
// growth as pending until GrowOffline does it.
func Grow(dir string, size int64) error {
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	img := Image(dir)
	st, err := os.Stat(img)
	if err != nil {
		return err
	}
	if size > st.Size() {
		if err := os.Truncate(img, size); err != nil {
			return err
		}
	}
	if !Mounted(dir) {
		return resizeOffline(img)
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

// GrowPending says whether the volume's image is larger than its
// filesystem: a growth that could not happen online waits for GrowOffline.
func GrowPending(dir string) (bool, error) {
	if !HasImage(dir) {
		return false, nil
	}
	img := Image(dir)
	st, err := os.Stat(img)
	if err != nil {
		return false, err
	}
	fs, err := filesystemSize(img)
	if err != nil {
		return false, err
	}
	return fs < st.Size(), nil
}

// GrowOffline grows the filesystem of the volume at dir to its image's
// size, if it is smaller: unmount, check, resize, mount again. It must run
// while no pod uses the volume (a kubelet calls it before a pod starts);
// a volume still busy is left mounted, unchanged, and the error says so.
func GrowOffline(dir string) error {
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if pending, err := GrowPending(dir); err != nil || !pending {
		return err
	}
	if Mounted(dir) {
		if err := syscall.Unmount(dir, 0); err != nil {
			return fmt.Errorf("unmount %s to grow it offline: %w", dir, err)
		}
	}
	// The loop device goes with the last mount of the filesystem; one
	// left means a mount namespace still holds it: not offline at all.
	if out, err := exec.Command("losetup", "-j", Image(dir)).Output(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		return errors.Join(fmt.Errorf("volume %s is still in use elsewhere (%s): not grown", dir, strings.TrimSpace(string(out))), err, mount(dir))
	}
	err = resizeOffline(Image(dir))
	return errors.Join(err, mount(dir))
}

func resizeOffline(img string) error {
	// resize2fs insists on a freshly checked filesystem; -p repairs only
	// what is safe to repair without asking.
	if out, err := exec.Command("e2fsck", "-f", "-p", img).CombinedOutput(); err != nil {
		// Exit code 1: errors corrected. Anything else stops the growth.
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			return fmt.Errorf("e2fsck -f -p %s: %w: %s", img, err, strings.TrimSpace(string(out)))
		}
	}
	return run("resize2fs", img)
}

// filesystemSize reads the ext4 superblock's block count and block size.
func filesystemSize(img string) (int64, error) {
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		return 0, fmt.Errorf("dumpe2fs -h %s: %w", img, err)
	}
	var blocks, blockSize int64
	for line := range strings.Lines(string(out)) {
		key, value, _ := strings.Cut(line, ":")
		switch key {
		case "Block count":
			blocks, _ = strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		case "Block size":
			blockSize, _ = strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		}
	}
	if blocks == 0 || blockSize == 0 {
		return 0, fmt.Errorf("dumpe2fs -h %s: no block count and size", img)
	}
	return blocks * blockSize, nil
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
