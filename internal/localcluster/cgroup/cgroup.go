// Package cgroup keeps the processes of each container of the local cluster
// in a cgroup (v2) of its own, as a container runtime does: a container is
// stopped by killing its cgroup, so no process escapes by changing its
// session or process group (PostgreSQL's children call setsid), and a pod
// is frozen through the cgroup freezer.
//
// Layout: <Root>/regent/<cluster>/<node>/<pod uid>/<container>.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Root is the cgroup v2 hierarchy. This machine mounts it beside the v1
// controllers at /sys/fs/cgroup/unified; a pure v2 host mounts it at
// /sys/fs/cgroup.
var Root = detectRoot()

func detectRoot() string {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			var st unix.Statfs_t
			if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
				return p
			}
		}
	}
	return "/sys/fs/cgroup/unified"
}

// Group is a cgroup directory.
type Group string

// For returns the group of the given path below <Root>/regent.
func For(parts ...string) Group {
	return Group(filepath.Join(append([]string{Root, "regent"}, parts...)...))
}

// Create makes the group (and its parents).
func (g Group) Create() error { return os.MkdirAll(string(g), 0o755) }

// Open returns a directory file descriptor for CLONE_INTO_CGROUP.
func (g Group) Open() (*os.File, error) { return os.Open(string(g)) }

// Procs lists the processes of the group and its descendants.
func (g Group) Procs() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(string(g), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(s.Text())); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return pids, err
}

// Signal sends sig to every process of the group.
func (g Group) Signal(sig syscall.Signal) error {
	pids, err := g.Procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return nil
}

// Kill kills every process of the group and its descendants at once.
func (g Group) Kill() error {
	if _, err := os.Stat(string(g)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// A frozen process cannot die until thawed.
	_ = g.Freeze(false)
	err := os.WriteFile(filepath.Join(string(g), "cgroup.kill"), []byte("1"), 0)
	if err != nil {
		// Kernels before 5.14 have no cgroup.kill.
		return g.Signal(syscall.SIGKILL)
	}
	return nil
}

// Freeze freezes (or thaws) every process of the group and its descendants.
func (g Group) Freeze(frozen bool) error {
	v := "0"
	if frozen {
		v = "1"
	}
	return os.WriteFile(filepath.Join(string(g), "cgroup.freeze"), []byte(v), 0)
}

// Frozen reports whether the group is frozen.
func (g Group) Frozen() bool {
	b, err := os.ReadFile(filepath.Join(string(g), "cgroup.events"))
	return err == nil && strings.Contains(string(b), "frozen 1")
}

// Empty reports whether no process is left in the group.
func (g Group) Empty() bool {
	pids, err := g.Procs()
	return err == nil && len(pids) == 0
}

// Remove kills what is left in the group, waits for it to empty and removes
// it with its descendants.
func (g Group) Remove(timeout time.Duration) error {
	if _, err := os.Stat(string(g)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := g.Kill(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for !g.Empty() {
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes after %s", g, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var dirs []string
	_ = filepath.WalkDir(string(g), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
