package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PodCgroup is the cgroup of a pod on a real node whose pods live under
// root, relative to each v1 hierarchy: the kubelet's cgroupfs layout,
// kubepods[/burstable|/besteffort]/pod<uid>.
func PodCgroup(root, uid string) (string, error) {
	for _, qos := range []string{"", "burstable", "besteffort"} {
		rel := filepath.Join(root, "kubepods", qos, "pod"+uid)
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", rel)); err == nil {
			return rel, nil
		}
	}
	return "", fmt.Errorf("no cgroup for pod %s under %s: is it running?", uid, root)
}

// Kill sends SIGKILL to every process of the cgroup rel (a pod's, or one
// of its containers': <pod cgroup>/<container id>) and of its children,
// as a crash would: nothing runs its shutdown.
func Kill(rel string) error {
	pids, err := procs(rel)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return err
}

// procs lists the processes of the cgroup rel (in the v1 pids hierarchy)
// and of its children.
func procs(rel string) ([]int, error) {
	dir := filepath.Join("/sys/fs/cgroup/pids", rel)
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// Freeze stops (or, frozen false, lets go on) every process of the cgroup
// rel with the v1 freezer: the processes stay, their sockets open and
// unanswered, as on a stalled machine.
func Freeze(rel string, frozen bool) error {
	state := "THAWED"
	if frozen {
		state = "FROZEN"
	}
	return os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", rel, "freezer.state"), []byte(state), 0o644)
}

// NetNSOf is the network namespace of the pod whose cgroup is rel (every
// container of a pod shares it), as a /proc path of one of its processes.
func NetNSOf(rel string) (string, error) {
	pids, err := procs(rel)
	if err != nil {
		return "", err
	}
	for _, pid := range pids {
		if p := "/proc/" + strconv.Itoa(pid) + "/ns/net"; exists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no process in cgroup %s", rel)
}

// PodNetNSs are the network namespaces of every pod under root (a node's
// cgroup root), one /proc path each.
func PodNetNSs(root string) []string {
	pids, _ := procs(filepath.Join(root, "kubepods"))
	seen := map[uint64]bool{}
	var out []string
	for _, pid := range pids {
		p := "/proc/" + strconv.Itoa(pid) + "/ns/net"
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && !seen[st.Ino] {
			seen[st.Ino] = true
			out = append(out, p)
		}
	}
	return out
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
