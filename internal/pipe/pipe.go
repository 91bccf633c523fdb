// Package pipe joins two connections: the local cluster's forwarders and
// service proxy, and the agent's replication relay, all move bytes the same
// way.
package pipe

import (
	"context"
	"net"
)

// Both copies between a and b in both directions until either side ends,
// then closes both. Before forwarding each chunk it asks ok (nil means
// always yes) and cuts both connections the moment ok says no: the
// relay's leader end checks its lease there.
func Both(a, b net.Conn, ok func() bool) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if ok != nil && !ok() {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	_ = a.Close()
	_ = b.Close()
	<-done
}

// Serve accepts connections on l and hands each to handle in its own
// goroutine, until ctx ends (then it closes l and returns nil).
func Serve(ctx context.Context, l net.Listener, handle func(net.Conn)) error {
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go handle(c)
	}
}
