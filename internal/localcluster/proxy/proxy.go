// Package proxy does for the local cluster what kube-proxy would: it
// forwards a port on 127.0.0.1 to a ready endpoint of a Service, following
// the Service's EndpointSlices. New connections go to the current endpoint;
// connections open to an endpoint that left (not ready, or no longer
// selected) stay open, as kube-proxy's conntrack entries keep established
// TCP flows: they end when the endpoint's server closes them (a deposed
// leader stops its PostgreSQL) or the client gives up.
package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/regent-dev/regent/internal/pipe"
)

// Proxy forwards one Service port.
type Proxy struct {
	Client             kubernetes.Interface
	Namespace, Service string
	// Port is the Service port's name, or its number; empty takes the
	// first port.
	Port string
	// Dial connects to an endpoint (inside the cluster's network
	// namespace).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	Log  logr.Logger

	mu      sync.Mutex
	current string                       // host:port of the endpoint new connections go to
	conns   map[string]map[net.Conn]bool // by endpoint
}

// Serve accepts on l until ctx ends.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	p.conns = map[string]map[net.Conn]bool{}
	go p.follow(ctx)
	return pipe.Serve(ctx, l, func(client net.Conn) { p.handle(ctx, client) })
}

// Current returns the endpoint new connections go to ("" when none).
func (p *Proxy) Current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// Connections returns how many client connections are piped to an
// endpoint now.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, conns := range p.conns {
		n += len(conns)
	}
	return n
}

func (p *Proxy) handle(ctx context.Context, client net.Conn) {
	target := p.Current()
	if target == "" {
		// Wait briefly for an endpoint, as a client would retry.
		deadline := time.Now().Add(5 * time.Second)
		for target == "" && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			target = p.Current()
		}
		if target == "" {
			_ = client.Close()
			return
		}
	}
	backend, err := p.Dial(ctx, target)
	if err != nil {
		p.Log.V(1).Info("Dial endpoint", "endpoint", target, "error", err.Error())
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.conns[target] == nil {
		p.conns[target] = map[net.Conn]bool{}
	}
	p.conns[target][client] = true
	p.mu.Unlock()
	pipe.Both(client, backend, nil)
	p.mu.Lock()
	delete(p.conns[target], client)
	if len(p.conns[target]) == 0 {
		delete(p.conns, target)
	}
	p.mu.Unlock()
}

// follow polls the Service's EndpointSlices and moves the current endpoint.
func (p *Proxy) follow(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ready, err := p.readyEndpoints(ctx)
		if err == nil {
			p.setEndpoints(ready)
		} else if ctx.Err() == nil {
			p.Log.V(1).Info("List endpoints", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Proxy) setEndpoints(ready []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == "" || !slices.Contains(ready, p.current) {
		next := ""
		if len(ready) > 0 {
			next = ready[0]
		}
		if next != p.current {
			p.Log.Info("Endpoint changed", "service", p.Namespace+"/"+p.Service, "from", p.current, "to", next)
			p.current = next
		}
	}
}

func (p *Proxy) readyEndpoints(ctx context.Context) ([]string, error) {
	slicesList, err := p.Client.DiscoveryV1().EndpointSlices(p.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + p.Service,
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range slicesList.Items {
		port := ""
		for i, sp := range s.Ports {
			if sp.Port == nil {
				continue
			}
			if p.Port == "" && i == 0 || sp.Name != nil && *sp.Name == p.Port || strconv.Itoa(int(*sp.Port)) == p.Port {
				port = strconv.Itoa(int(*sp.Port))
				break
			}
		}
		if port == "" {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, port))
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// String describes the proxy for logs.
func (p *Proxy) String() string { return fmt.Sprintf("%s/%s:%s", p.Namespace, p.Service, p.Port) }
