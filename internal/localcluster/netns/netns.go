// Package netns manages the network namespace the local cluster lives in.
//
// Every process of the local cluster (control plane, kubelets, pods) runs in
// one network namespace that the cluster creates. Inside it, the pod range
// 10.244.0.0/16 is routed to the loopback device as a "local" range, like
// 127.0.0.0/8: every pod gets its own address, and no packet can leave the
// namespace. Pods cannot use 127.0.0.0/8 addresses themselves: the API server
// refuses loopback addresses in EndpointSlices, so Services would have no
// endpoints. The host reaches the cluster only through forwarders that listen
// on 127.0.0.1 and dial into the namespace (Dial).
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/regent-dev/regent/internal/pipe"
)

// PodCIDR is the range pods (and the API server) take addresses from,
// inside the namespace only.
const PodCIDR = "10.244.0.0/16"

// Path is where `ip netns` keeps the namespace called name.
func Path(name string) string { return "/run/netns/" + name }

// Exists reports whether the namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Ensure creates the namespace, brings its loopback up and routes PodCIDR
// to it. It is harmless on an existing namespace.
func Ensure(name string) error { return EnsureLocal(name, PodCIDR) }

// ControlPlaneCIDR is the part of PodCIDR that stays local when real nodes
// route their pods' ranges (10.244.<n>.0/24) to themselves: the API server
// and the cluster's other services outside pods.
const ControlPlaneCIDR = "10.244.0.0/24"

// EnsureLocal creates the namespace, brings its loopback up and routes
// local to it. It is harmless on an existing namespace.
func EnsureLocal(name, local string) error {
	if !Exists(name) {
		if err := ip("netns", "add", name); err != nil {
			return err
		}
	}
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		return err
	}
	err := ip("-n", name, "route", "add", "local", local, "dev", "lo", "table", "local")
	if err != nil && !strings.Contains(err.Error(), "File exists") {
		return err
	}
	return nil
}

// Delete removes the namespace (it disappears once no process is left in it).
func Delete(name string) error {
	if !Exists(name) {
		return nil
	}
	return ip("netns", "del", name)
}

// Command returns a command that runs argv inside the namespace. It uses
// nsenter rather than `ip netns exec`, which also mounts a fresh /sys and so
// hides the cgroup hierarchy mounted below it.
func Command(name string, argv ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + Path(name), "--"}, argv...)...)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Dial connects to addr from inside the namespace. The socket is created on
// an OS thread that entered the namespace; the thread is thrown away after,
// so no other goroutine ever runs in the namespace by accident.
func Dial(ctx context.Context, name, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open(Path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("open network namespace %s: %w", name, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("enter network namespace %s: %w", name, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// Forward accepts connections on l and copies each to a connection from
// dial, until ctx ends.
func Forward(ctx context.Context, l net.Listener, dial func(context.Context) (net.Conn, error)) error {
	return pipe.Serve(ctx, l, func(client net.Conn) {
		backend, err := dial(ctx)
		if err != nil {
			_ = client.Close()
			return
		}
		pipe.Both(client, backend, nil)
	})
}
