// Package netfault cuts traffic between chosen endpoints of the local
// cluster (pods, the API server) inside its network namespace, with
// nftables, and heals it again: network partitions for fault tests.
//
// Every address of the pod range is local to the one namespace, so a
// connection's source address tells nothing (the kernel picks the
// destination itself). What tells which pod opened a connection is the
// socket's cgroup: from the cluster's start, a rule marks every new
// connection with its opener's pod cgroup (conntrack mark = the low 32 bits
// of the pod cgroup's id, socket cgroupv2 level PodLevel). A partition
// drops, in both directions, every packet of a connection opened by one
// side to an address of the other: established connections hang, as
// across a real cut, rather than being reset.
package netfault

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

const (
	tableName = "regent-faults"
	markChain = "mark"
	// chainPrefix names each partition's chain.
	chainPrefix = "partition-"
	// PodLevel is a pod cgroup's depth in the v2 hierarchy:
	// <root>/regent/<cluster>/<node>/<pod uid>.
	PodLevel = 4
)

// Endpoint is one side's member: a pod (its connection mark, from its
// cgroup, and its address; or, on a real node, its own network namespace
// and its address) or a process outside pods, such as the API server (its
// addresses only: it opens no connection to the pods).
type Endpoint struct {
	Name string
	// Mark is the mark of the connections it opens (0: none).
	Mark uint32
	// NetNS is the path of the pod's own network namespace (a real
	// node's pod), where its side of a partition is cut; "" when the pod
	// shares the cluster's namespace.
	NetNS string
	// Addrs are the addresses it listens on (for the API server, every
	// address a pod reaches it by, its Service's too).
	Addrs []netip.Addr
}

// MarkOf is the connection mark of the pod whose cgroup directory is dir.
func MarkOf(dir string) (uint32, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no inode", dir)
	}
	// The low 32 bits are the mark, as the marking rule copies them.
	return uint32(st.Ino), nil
}

// inNS runs f with an nftables connection inside the namespace at path.
func inNS(path string, f func(*nftables.Conn) error) error {
	ns, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer ns.Close()
	// The library opens its netlink socket inside the namespace from the
	// fd; no thread of this process enters it.
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	return f(c)
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tableName}
}

// Install sets up the table and the marking of new connections in the
// namespace at path; it is harmless when they exist. It
// must run before the pods start: a connection opened before it is never
// marked, and no partition can cut it.
func Install(path string) error {
	return inNS(path, func(c *nftables.Conn) error {
		t := table()
		if existing, err := c.ListTableOfFamily(tableName, nftables.TableFamilyIPv4); err == nil && existing != nil {
			return nil
		}
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		// Marking comes before the faults (mangle before filter).
		mark := c.AddChain(&nftables.Chain{Name: markChain, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle, Policy: &accept})
		// ct state new: ct mark set socket cgroupv2 level PodLevel (low
		// 32 bits). A socket outside any pod (level too deep) breaks the
		// rule: its connections stay unmarked.
		c.AddRule(&nftables.Rule{Table: t, Chain: mark, Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: PodLevel, Register: 1},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		}})
		return c.Flush()
	})
}

// Partition cuts every connection between a and b, in both directions,
// under name (Heal(name) removes it): by connection marks inside the
// namespace at path, and inside the own namespace of each endpoint that
// has one. Either side may be a single endpoint; an endpoint on both sides
// is refused.
func Partition(path, name string, a, b []Endpoint) error {
	if name == "" || strings.ContainsAny(name, " \t\n") {
		return fmt.Errorf("partition name %q: want one word", name)
	}
	for _, x := range a {
		if slices.ContainsFunc(b, func(y Endpoint) bool { return y.Name == x.Name }) {
			return fmt.Errorf("%s is on both sides of partition %s", x.Name, name)
		}
	}
	for _, dir := range [][2][]Endpoint{{a, b}, {b, a}} {
		var others []netip.Addr
		for _, o := range dir[1] {
			others = append(others, o.Addrs...)
		}
		for _, e := range dir[0] {
			if e.NetNS == "" {
				continue
			}
			if err := isolate(e.NetNS, name, others); err != nil {
				return fmt.Errorf("%s's side of partition %s: %w", e.Name, name, err)
			}
		}
	}
	if !slices.ContainsFunc(append(slices.Clone(a), b...), func(e Endpoint) bool { return e.Mark != 0 }) {
		return nil
	}
	return inNS(path, func(c *nftables.Conn) error {
		t, names, err := faultState(c)
		if err != nil {
			return err
		}
		if slices.Contains(names, name) {
			return fmt.Errorf("partition %s is in force already", name)
		}
		// A chain of its own: healing deletes the chain, and listing the
		// chains lists the partitions.
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: chainPrefix + name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		for _, dir := range [][2][]Endpoint{{a, b}, {b, a}} {
			for _, from := range dir[0] {
				if from.Mark == 0 {
					continue
				}
				for _, to := range dir[1] {
					for _, addr := range to.Addrs {
						c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
							&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
							&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(from.Mark)},
							&expr.Ct{Key: expr.CtKeyDST, Direction: 0, Register: 1},
							&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr.AsSlice()},
							&expr.Verdict{Kind: expr.VerdictDrop},
						}})
					}
				}
			}
		}
		return c.Flush()
	})
}

// isolate cuts, inside a pod's own network namespace at path, every
// connection to or from addrs under name: each packet the pod sends on a
// connection whose original source or destination is one of addrs is
// dropped. Both sides of a partition cut their own; a connection through a
// Service's address (translated outside the pod) is cut by the side that
// answers it.
func isolate(path, name string, addrs []netip.Addr) error {
	return inNS(path, func(c *nftables.Conn) error {
		t := table()
		if existing, err := c.ListTableOfFamily(tableName, nftables.TableFamilyIPv4); err != nil || existing == nil {
			c.AddTable(t)
		}
		if names, err := partitions(c); err == nil && slices.Contains(names, name) {
			return fmt.Errorf("partition %s is in force already", name)
		}
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: chainPrefix + name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		for _, addr := range addrs {
			for _, key := range []expr.CtKey{expr.CtKeySRC, expr.CtKeyDST} {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
					&expr.Ct{Key: key, Direction: 0, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr.AsSlice()},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		return c.Flush()
	})
}

// Heal removes partition name, or every partition when name is "".
func Heal(path, name string) error {
	return inNS(path, func(c *nftables.Conn) error {
		t, names, err := faultState(c)
		if err != nil {
			return err
		}
		if name != "" && !slices.Contains(names, name) {
			return fmt.Errorf("no partition %s in force (%s)", name, strings.Join(names, ", "))
		}
		for _, n := range names {
			if name == "" || n == name {
				ch := &nftables.Chain{Name: chainPrefix + n, Table: t}
				c.FlushChain(ch)
				c.DelChain(ch)
			}
		}
		return c.Flush()
	})
}

// Partitions lists the partitions in force, by name.
func Partitions(path string) ([]string, error) {
	var out []string
	err := inNS(path, func(c *nftables.Conn) error {
		var err error
		_, out, err = faultState(c)
		return err
	})
	return out, err
}

func partitions(c *nftables.Conn) ([]string, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name == tableName && strings.HasPrefix(ch.Name, chainPrefix) {
			out = append(out, strings.TrimPrefix(ch.Name, chainPrefix))
		}
	}
	slices.Sort(out)
	return out, nil
}

// faultState is the fault table and the partitions in force.
func faultState(c *nftables.Conn) (*nftables.Table, []string, error) {
	t, err := faultTable(c)
	if err != nil {
		return nil, nil, err
	}
	names, err := partitions(c)
	return t, names, err
}

func faultTable(c *nftables.Conn) (*nftables.Table, error) {
	t, err := c.ListTableOfFamily(tableName, nftables.TableFamilyIPv4)
	if err != nil || t == nil {
		return nil, errors.New("no fault table in the cluster's network namespace: it was started before partitions existed; restart it (localcluster down, up)")
	}
	return t, nil
}
