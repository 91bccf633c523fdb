package realnode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupV1 are the hierarchies the kubelet and runc use on this machine.
var cgroupV1 = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"}

// Run is the node: called in a process that already runs in the node's
// network namespace and in a mount namespace of its own (see Command), it
// gives the node a private /run, makes its cgroups, starts containerd,
// imports the images, then runs the kubelet and kube-proxy until ctx ends,
// each started again when it exits. Before it returns, every process of
// the node and of its pods is gone.
func Run(ctx context.Context, n Node, logf func(string, ...any)) error {
	// The node's /run: containerd's state, its pods' network namespaces
	// and runc's state are the node's own, and go with its mount
	// namespace.
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("a private /run: %w", err)
	}
	if err := makeCgroups(n.CgroupRoot); err != nil {
		return err
	}
	defer func() {
		killNode(n.CgroupRoot)
		logf("every process of the node stopped")
	}()
	// A socket left by the node's last run would answer nothing.
	_ = os.Remove(n.socket())
	containerd, _ := supervise(ctx, n, "containerd", logf, "containerd", "--config", n.containerdConfig())
	if err := waitSocket(ctx, n.socket(), 30*time.Second); err != nil {
		return fmt.Errorf("containerd: %w (log %s)", err, filepath.Join(n.logDir(), "containerd.log"))
	}
	for _, archive := range n.Images {
		if err := importImage(ctx, n, archive); err != nil {
			return err
		}
	}
	kubelet, kubeletProc := supervise(ctx, n, "kubelet", logf, filepath.Join(n.BinDir, "kubelet"),
		"--config="+n.kubeletConfig(), "--kubeconfig="+n.Kubeconfig,
		"--root-dir="+filepath.Join(n.Dir, "kubelet"),
		"--hostname-override="+n.Name, "--node-ip="+n.IP,
		"--node-labels=topology.kubernetes.io/zone="+n.Zone)
	proxy, _ := supervise(ctx, n, "kube-proxy", logf, filepath.Join(n.BinDir, "kube-proxy"), "--config="+n.proxyConfig())
	logf("node %s runs: containerd, kubelet, kube-proxy (logs in %s)", n.Name, n.logDir())
	pauseWhileFile(ctx, n.HeartbeatPausedFile, kubeletProc, logf)
	// Each got SIGTERM; the containers and containerd's shims, which
	// outlive containerd, are killed with the node (the deferred killNode).
	for _, done := range []<-chan struct{}{kubelet, proxy, containerd} {
		<-done
	}
	return nil
}

// pauseWhileFile runs until ctx ends, keeping the process proc returns
// stopped (SIGSTOP) while file exists and going (SIGCONT) otherwise.
func pauseWhileFile(ctx context.Context, file string, proc func() *os.Process, logf func(string, ...any)) {
	paused := false
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if p := proc(); paused && p != nil {
				_ = p.Signal(syscall.SIGCONT)
			}
			return
		case <-tick.C:
		}
		_, err := os.Stat(file)
		want := file != "" && err == nil
		if p := proc(); p != nil && (want || paused) {
			sig := syscall.SIGCONT
			if want {
				sig = syscall.SIGSTOP
			}
			_ = p.Signal(sig)
			if want != paused {
				logf("the kubelet's heartbeat is %s (%s)", map[bool]string{true: "stopped", false: "resumed"}[want], file)
			}
		}
		paused = want
	}
}

// supervise runs one of the node's processes until ctx ends, starting it
// again a second after it exits, as a node's init system does (kube-proxy
// exits on purpose when its node's address changes). The channel closes
// once it stopped for good; the function returns the process running now
// (nil between two runs).
func supervise(ctx context.Context, n Node, name string, logf func(string, ...any), path string, args ...string) (<-chan struct{}, func() *os.Process) {
	done := make(chan struct{})
	var current atomic.Pointer[os.Process]
	go func() {
		defer close(done)
		for {
			cmd, err := start(n, name, path, args...)
			if err != nil {
				logf("%v", err)
			} else {
				current.Store(cmd.Process)
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				select {
				case err = <-exited:
					current.Store(nil)
					logf("%s exited (%v); starting it again (log %s)", name, err, filepath.Join(n.logDir(), name+".log"))
				case <-ctx.Done():
					// Stopping: how it exited says nothing more.
					_ = cmd.Process.Signal(syscall.SIGTERM)
					_ = cmd.Process.Signal(syscall.SIGCONT)
					select {
					case err = <-exited:
					case <-time.After(5 * time.Second):
						_ = cmd.Process.Kill()
						err = <-exited
					}
					_ = err
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return done, current.Load
}

// start runs one of the node's processes, its output in the node's log
// directory.
func start(n Node, name, path string, args ...string) (*exec.Cmd, error) {
	log, err := os.OpenFile(filepath.Join(n.logDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return cmd, nil
}

func waitSocket(ctx context.Context, path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket %s after %s", path, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// importImage loads an OCI archive into the node's image store (the
// namespace the kubelet's images live in), under every name it lists.
func importImage(ctx context.Context, n Node, archive string) error {
	ctr := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.socket(), "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := ctr("images", "import", archive); err != nil {
		return err
	}
	b, err := os.ReadFile(archive + ".names")
	if err != nil {
		return fmt.Errorf("the names of %s: %w (run hack/images.sh)", archive, err)
	}
	names := strings.Fields(string(b))
	for _, name := range names[1:] {
		if err := ctr("images", "tag", "--force", names[0], name); err != nil {
			return err
		}
	}
	return nil
}

// makeCgroups creates the node's root in every v1 hierarchy; the cpuset
// one needs its CPUs and memory nodes before any task can join it.
func makeCgroups(root string) error {
	for _, h := range cgroupV1 {
		if err := os.MkdirAll(filepath.Join("/sys/fs/cgroup", h, root), 0o755); err != nil {
			return fmt.Errorf("cgroup %s/%s: %w", h, root, err)
		}
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuset", f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join("/sys/fs/cgroup/cpuset", root, f), b, 0o644); err != nil {
			return fmt.Errorf("cgroup cpuset/%s: %w", root, err)
		}
	}
	return nil
}

// killNode kills every process of the node: the containers (all in the
// node's cgroups) and whatever else shares the node's mount namespace
// (containerd, its shims, the kubelet), then removes the cgroups.
func killNode(root string) {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for range 20 {
		var left int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
			if mnt == self || inCgroup(pid, root) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				left++
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range cgroupV1 {
		removeTree(filepath.Join("/sys/fs/cgroup", h, root))
	}
}

// inCgroup reports whether pid is in the node's cgroup (its pids
// hierarchy holds every container's processes).
func inCgroup(pid int, root string) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) == 3 && parts[1] == "pids" {
			return parts[2] == "/"+root || strings.HasPrefix(parts[2], "/"+root+"/")
		}
	}
	return false
}

// removeTree removes a cgroup and its children, deepest first.
func removeTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	// A cgroup still busy stays; the next stop tries again.
	_ = os.Remove(dir)
}
