package pipe

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestBothCopiesAndCutsWhenToldTo(t *testing.T) {
	client, front := net.Pipe()
	back, server := net.Pipe()
	var allowed atomic.Bool
	allowed.Store(true)
	done := make(chan struct{})
	go func() { Both(front, back, allowed.Load); close(done) }()

	go func() { _, _ = client.Write([]byte("ping")) }()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("forwarded %q, %v", buf, err)
	}
	allowed.Store(false)
	go func() { _, _ = server.Write([]byte("pong")) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the pipe kept going after ok said no")
	}
	_ = client.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := client.Read(buf); err == nil {
		t.Fatalf("a chunk got through after the cut: %q", buf[:n])
	}
}
