package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mount is a directory or file bound into the container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Spec is everything the launcher needs to start one container.
type Spec struct {
	// Rootfs is an empty directory the launcher turns into the container's
	// root (a tmpfs, in its own mount namespace).
	Rootfs string `json:"rootfs"`
	// Hostname is the container's host name (the pod's name); the
	// launcher runs in a UTS namespace of its own.
	Hostname   string   `json:"hostname,omitempty"`
	Image      Image    `json:"image"`
	Mounts     []Mount  `json:"mounts"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir,omitempty"`
	UID        int      `json:"uid"`
	GID        int      `json:"gid"`
	Groups     []int    `json:"groups,omitempty"`
	// ReadOnlyRoot makes the container's root read-only, as
	// readOnlyRootFilesystem does.
	ReadOnlyRoot bool `json:"readOnlyRoot,omitempty"`
}

// hostDirs are shared read-only with every container: the machine's
// programs and libraries play the part of the image's.
var hostDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt"}

// Launch builds the container's filesystem and executes its command. It must
// run as root in a fresh mount namespace (the kubelet starts it with
// CLONE_NEWNS); on success it does not return.
func Launch(spec *Spec) error {
	if len(spec.Argv) == 0 {
		return errors.New("no command: the local cluster's images have no entrypoint, set command")
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set host name: %w", err)
		}
	}
	// Nothing mounted here may leak back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := spec.Rootfs
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	for _, d := range hostDirs {
		src := "/" + d
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		dst := filepath.Join(root, d)
		if fi.Mode()&os.ModeSymlink != 0 {
			// Merged-/usr systems link /bin to usr/bin: keep the link.
			target, _ := os.Readlink(src)
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
			continue
		}
		if err := bind(src, dst, true, true); err != nil {
			return err
		}
	}
	for _, d := range []string{"proc", "dev", "sys"} {
		if err := bind("/"+d, filepath.Join(root, d), false, true); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "var/tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o1777); err != nil {
			return err
		}
		_ = os.Chmod(filepath.Join(root, d), 0o1777)
	}
	// Image files (a binary at /usr/local/bin/regent, say) and volumes go
	// over the read-only host view; bind makes room for them (see mkdirIn).
	dsts := make([]string, 0, len(spec.Image.Files))
	for dst := range spec.Image.Files {
		dsts = append(dsts, dst)
	}
	sort.Strings(dsts)
	for _, dst := range dsts {
		if err := bindIn(root, spec.Image.Files[dst], dst, true, false); err != nil {
			return err
		}
	}
	for _, m := range spec.Mounts {
		if err := bindIn(root, m.Source, m.Target, m.ReadOnly, true); err != nil {
			return fmt.Errorf("volume at %s: %w", m.Target, err)
		}
	}
	// Last: making room for a mount point under /etc replaces the view of
	// /etc, which would hide an /etc/passwd bound before it.
	if err := writeUsers(root, spec.Image.Users); err != nil {
		return err
	}
	if spec.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	// pivot_root, not chroot: with the host's root detached, this mount
	// namespace holds the container's own mounts only, not a copy of every
	// mount the host had when it was made. Another pod's volume then goes
	// with its pod: it can be unmounted and grown offline while this
	// container runs.
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.Chdir(wd); err != nil {
		return fmt.Errorf("working directory %s: %w", wd, err)
	}
	groups := slices.Compact(slices.Sorted(slices.Values(append([]int{spec.GID}, spec.Groups...))))
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(spec.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", spec.GID, err)
	}
	if err := syscall.Setuid(spec.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", spec.UID, err)
	}
	argv0, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return err
	}
	return syscall.Exec(argv0, spec.Argv, spec.Env)
}

// bindIn mounts src at path inside root, making the mount point first.
func bindIn(root, src, path string, readOnly, recursive bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	dir := path
	if !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	if err := mkdirIn(root, dir); err != nil {
		return fmt.Errorf("mount point %s: %w", path, err)
	}
	if !fi.IsDir() {
		// A new file in a read-only host directory (/usr/local/bin/regent)
		// needs a writable view of that directory first.
		target := filepath.Join(root, path)
		if _, err := os.Stat(target); err != nil {
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
			if errors.Is(err, syscall.EROFS) {
				if err := explode(root, dir); err != nil {
					return err
				}
				f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
			}
			if err != nil {
				return fmt.Errorf("mount point %s: %w", path, err)
			}
			_ = f.Close()
		}
	}
	return bind(src, filepath.Join(root, path), readOnly, recursive)
}

// mkdirIn makes dir exist inside root. Where a missing directory would go
// into a read-only view of a host directory (/etc/regent under the host's
// /etc), that view is replaced by a writable one: a tmpfs holding a
// read-only bind of each of the host directory's entries. The host's
// files stay visible and nothing is written to the host.
func mkdirIn(root, dir string) error {
	for range 16 {
		err := os.MkdirAll(filepath.Join(root, dir), 0o755)
		if err == nil || !errors.Is(err, syscall.EROFS) {
			return err
		}
		// The deepest existing ancestor is the read-only one.
		p := filepath.Clean(dir)
		for {
			parent := filepath.Dir(p)
			if _, err := os.Stat(filepath.Join(root, parent)); err == nil || parent == p {
				p = parent
				break
			}
			p = parent
		}
		if err := explode(root, p); err != nil {
			return err
		}
	}
	return fmt.Errorf("cannot make %s", dir)
}

// explode turns the read-only view of host directory dir into a tmpfs of
// read-only binds of its entries.
func explode(root, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	target := filepath.Join(root, dir)
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("writable view of %s: %w", dir, err)
	}
	for _, e := range entries {
		src, dst := filepath.Join(dir, e.Name()), filepath.Join(target, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err == nil {
				_ = os.Symlink(link, dst)
			}
		case e.IsDir(), e.Type().IsRegular():
			if err := bind(src, dst, true, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// bind mounts src at dst, creating dst like src (a directory or a file).
func bind(src, dst string, readOnly, recursive bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	} else if _, err := os.Stat(dst); err != nil {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_ = f.Close()
	}
	flags := uintptr(unix.MS_BIND)
	if recursive {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(src, dst, "", flags, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	if readOnly {
		if err := unix.Mount("", dst, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", dst, err)
		}
	}
	return nil
}

// writeUsers gives the container an /etc/passwd and /etc/group with the
// host's entries plus the image's users.
func writeUsers(root string, users []User) error {
	if len(users) == 0 {
		return nil
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	group, _ := os.ReadFile("/etc/group")
	dir := filepath.Join(root, "regent-local-etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, content := range map[string]string{"passwd": prepend(users, string(passwd), true), "group": prepend(users, string(group), false)} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			return err
		}
		if err := bindIn(root, f, "/etc/"+name, true, false); err != nil {
			return err
		}
	}
	return nil
}

// prepend puts the image's entries before the host's, so that a name the
// host also has (postgres) resolves to the image's uid.
func prepend(users []User, content string, passwd bool) string {
	var b strings.Builder
	for _, u := range users {
		if passwd {
			home := u.Home
			if home == "" {
				home = "/"
			}
			fmt.Fprintf(&b, "%s:x:%d:%d::%s:/bin/sh\n", u.Name, u.UID, u.GID, home)
		} else {
			fmt.Fprintf(&b, "%s:x:%d:\n", u.Name, u.GID)
		}
	}
	var rest []string
	for _, line := range strings.Split(content, "\n") {
		name, _, _ := strings.Cut(line, ":")
		if line == "" || slices.ContainsFunc(users, func(u User) bool { return u.Name == name }) {
			continue
		}
		rest = append(rest, line)
	}
	return b.String() + strings.Join(rest, "\n") + "\n"
}

// lookPath finds argv0 on the container's PATH (after pivot_root).
func lookPath(argv0 string, env []string) (string, error) {
	if strings.Contains(argv0, "/") {
		return argv0, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, argv0)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found on PATH %s", argv0, path)
}

// EncodeSpec and DecodeSpec pass a Spec to the launcher process.
func EncodeSpec(s *Spec) ([]byte, error) { return json.Marshal(s) }

// DecodeSpec reads a Spec.
func DecodeSpec(b []byte) (*Spec, error) {
	s := &Spec{}
	return s, json.Unmarshal(b, s)
}
