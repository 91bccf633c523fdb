package netfault_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/netfault"
	"github.com/regent-dev/regent/internal/localcluster/netns"
)

// The test binary doubles as the pods' program: an echo server, or a
// client that takes commands on stdin ("open ADDR", "ping N") and answers
// "ok" or "fail <why>" on stdout.
func TestMain(m *testing.M) {
	switch os.Getenv("NETFAULT_HELPER") {
	case "server":
		serve(os.Getenv("NETFAULT_ADDR"))
	case "client":
		client()
	default:
		os.Exit(m.Run())
	}
}

func serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("fail", err)
		os.Exit(1)
	}
	fmt.Println("ok")
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { _, _ = io.Copy(c, c) }()
	}
}

func client() {
	var conns []net.Conn
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "open":
			c, err := net.DialTimeout("tcp", f[1], time.Second)
			if err != nil {
				fmt.Println("fail", err)
				continue
			}
			conns = append(conns, c)
			fmt.Println("ok", len(conns)-1)
		case "ping":
			i, _ := strconv.Atoi(f[1])
			c := conns[i]
			_ = c.SetDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 5)
			if _, err := c.Write([]byte("ping\n")); err != nil {
				fmt.Println("fail", err)
				continue
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				fmt.Println("fail", err)
				continue
			}
			fmt.Println("ok")
		}
	}
}

// pod is a helper process in its own pod cgroup inside the namespace.
type pod struct {
	name string
	mark uint32
	ip   netip.Addr
	in   io.Writer
	out  *bufio.Scanner
}

func startPod(t *testing.T, ns, name, role string, ip netip.Addr) *pod {
	t.Helper()
	g := cgroup.For(ns, "node", name)
	if err := g.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Kill(); _ = g.Remove(5 * time.Second) })
	fd, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := netns.Command(ns, self)
	cmd.Env = append(os.Environ(), "NETFAULT_HELPER="+role, "NETFAULT_ADDR="+net.JoinHostPort(ip.String(), "7000"))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	mark, err := netfault.MarkOf(string(g))
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{name: name, mark: mark, ip: ip, in: in, out: bufio.NewScanner(out)}
	if role == "server" {
		p.expect(t, "ok", "listen")
	}
	return p
}

func (p *pod) expect(t *testing.T, want, what string) {
	t.Helper()
	if !p.out.Scan() {
		t.Fatalf("%s: %s: no answer", p.name, what)
	}
	if got := p.out.Text(); !strings.HasPrefix(got, want) {
		t.Fatalf("%s: %s: %q, want %s", p.name, what, got, want)
	}
}

func (p *pod) do(t *testing.T, cmd, want string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		t.Fatal(err)
	}
	p.expect(t, want, cmd)
}

func (p *pod) endpoint() netfault.Endpoint {
	return netfault.Endpoint{Name: p.name, Mark: p.mark, Addrs: []netip.Addr{p.ip}}
}

// A partition cuts, both ways, the connections between its two sides
// inside the cluster's namespace, those already open too (they hang, as
// across a real cut), and nothing else; healing it lets them through again.
func TestAPartitionCutsBothWaysAndHeals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, cgroups, nftables")
	}
	ns := "regent-netfault-" + strconv.Itoa(os.Getpid())
	if err := netns.Ensure(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	if err := cgroup.For(ns).Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cgroup.For(ns).Remove(5 * time.Second) })
	path := netns.Path(ns)
	if err := netfault.Install(path); err != nil {
		t.Fatal(err)
	}
	if err := netfault.Install(path); err != nil {
		t.Fatalf("installing again: %v", err)
	}
	a := startPod(t, ns, "a", "server", netip.MustParseAddr("10.244.9.1"))
	b := startPod(t, ns, "b", "server", netip.MustParseAddr("10.244.9.2"))
	ca := startPod(t, ns, "ca", "client", netip.MustParseAddr("10.244.9.3"))
	cb := startPod(t, ns, "cb", "client", netip.MustParseAddr("10.244.9.4"))
	other := startPod(t, ns, "other", "client", netip.MustParseAddr("10.244.9.5"))
	addr := func(p *pod) string { return net.JoinHostPort(p.ip.String(), "7000") }

	ca.do(t, "open "+addr(b), "ok 0") // ca -> b, open before the cut
	ca.do(t, "ping 0", "ok")
	cb.do(t, "open "+addr(a), "ok 0") // cb -> a
	other.do(t, "open "+addr(b), "ok 0")

	// {a, ca} | {b, cb}
	side1 := []netfault.Endpoint{a.endpoint(), ca.endpoint()}
	side2 := []netfault.Endpoint{b.endpoint(), cb.endpoint()}
	if err := netfault.Partition(path, "cut", side1, side2); err != nil {
		t.Fatal(err)
	}
	if got, err := netfault.Partitions(path); err != nil || len(got) != 1 || got[0] != "cut" {
		t.Errorf("partitions in force: %v, %v", got, err)
	}
	ca.do(t, "ping 0", "fail") // established: hangs
	cb.do(t, "ping 0", "fail") // the other way
	ca.do(t, "open "+addr(b), "fail")
	cb.do(t, "open "+addr(a), "fail")
	other.do(t, "ping 0", "ok") // not in the partition
	other.do(t, "open "+addr(a), "ok 1")
	if err := netfault.Partition(path, "bad", side1, side1); err == nil {
		t.Errorf("a partition with an endpoint on both sides was accepted")
	}

	if err := netfault.Heal(path, "cut"); err != nil {
		t.Fatal(err)
	}
	ca.do(t, "open "+addr(b), "ok 1")
	ca.do(t, "ping 1", "ok")
	cb.do(t, "open "+addr(a), "ok 1")
	cb.do(t, "ping 1", "ok")
	if got, err := netfault.Partitions(path); err != nil || len(got) != 0 {
		t.Errorf("partitions after healing: %v, %v", got, err)
	}
}

// On real nodes each pod has a network namespace of its own: each side of
// a partition cuts its own connections inside it, both ways, established
// ones too (they hang), until the partition is healed in every namespace.
func TestAPartitionBetweenPodsOfTheirOwnNamespacesCutsBothWaysAndHeals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, cgroups, nftables")
	}
	base := "regent-netfault-" + strconv.Itoa(os.Getpid())
	nsA, nsB := base+"-a", base+"-b"
	for _, ns := range []string{nsA, nsB} {
		if err := netns.EnsureLocal(ns, "127.0.0.0/8"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netns.Delete(ns) })
		if err := cgroup.For(ns).Create(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cgroup.For(ns).Remove(5 * time.Second) })
	}
	ipA, ipB := netip.MustParseAddr("10.246.9.1"), netip.MustParseAddr("10.246.9.2")
	for _, args := range [][]string{
		{"link", "add", "nfa", "netns", nsA, "type", "veth", "peer", "name", "nfb", "netns", nsB},
		{"-n", nsA, "addr", "add", ipA.String() + "/24", "dev", "nfa"},
		{"-n", nsB, "addr", "add", ipB.String() + "/24", "dev", "nfb"},
		{"-n", nsA, "link", "set", "nfa", "up"},
		{"-n", nsB, "link", "set", "nfb", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	a := startPod(t, nsA, "a", "server", ipA)
	b := startPod(t, nsB, "b", "server", ipB)
	ca := startPod(t, nsA, "ca", "client", ipA) // a's client: the same pod's namespace
	cb := startPod(t, nsB, "cb", "client", ipB)
	addr := func(p *pod) string { return net.JoinHostPort(p.ip.String(), "7000") }
	ca.do(t, "open "+addr(b), "ok 0") // open before the cut
	ca.do(t, "ping 0", "ok")
	cb.do(t, "open "+addr(a), "ok 0")

	// No mark: the cut is made in each pod's namespace, none in the one at
	// path (which has no fault table).
	endpoint := func(p *pod, ns string) netfault.Endpoint {
		return netfault.Endpoint{Name: p.name, NetNS: netns.Path(ns), Addrs: []netip.Addr{p.ip}}
	}
	if err := netfault.Partition("/nonexistent", "cut", []netfault.Endpoint{endpoint(a, nsA)}, []netfault.Endpoint{endpoint(b, nsB)}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{nsA, nsB} {
		if got, err := netfault.Partitions(netns.Path(ns)); err != nil || len(got) != 1 || got[0] != "cut" {
			t.Errorf("partitions in force in %s: %v, %v", ns, got, err)
		}
	}
	ca.do(t, "ping 0", "fail") // established: hangs
	cb.do(t, "ping 0", "fail") // the other way
	ca.do(t, "open "+addr(b), "fail")
	cb.do(t, "open "+addr(a), "fail")
	ca.do(t, "open "+addr(a), "ok 1") // inside its own side

	for _, ns := range []string{nsA, nsB} {
		if err := netfault.Heal(netns.Path(ns), "cut"); err != nil {
			t.Fatal(err)
		}
	}
	ca.do(t, "open "+addr(b), "ok 2")
	ca.do(t, "ping 2", "ok")
	cb.do(t, "open "+addr(a), "ok 1")
	cb.do(t, "ping 1", "ok")
}
