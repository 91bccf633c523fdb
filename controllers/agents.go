package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
)

// AgentReader reads a pod's agent's /status (docs/data-plane.md); roots
// are the cluster's CA, which the agent's certificate must chain to.
type AgentReader interface {
	Status(ctx context.Context, pod *corev1.Pod, roots *x509.CertPool) (*api.Status, error)
}

// HTTPAgentReader reads /status on https://<pod IP>:8008 with a short
// timeout: a silent agent must not slow the decision down.
type HTTPAgentReader struct{}

// NewHTTPAgentReader returns a reader; each read's context sets its
// timeout.
func NewHTTPAgentReader() *HTTPAgentReader { return &HTTPAgentReader{} }

// Status implements AgentReader. The agent must show a certificate of the
// cluster's CA that names the pod: the positions the operator elects by
// come only from the members themselves.
func (h *HTTPAgentReader) Status(ctx context.Context, pod *corev1.Pod, roots *x509.CertPool) (*api.Status, error) {
	if pod.Status.PodIP == "" {
		return nil, fmt.Errorf("pod %s has no IP", pod.Name)
	}
	url := "https://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(names.PortAgentHTTP)) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// A connection per read, each checking the name of the pod it is for;
	// a TLS 1.3 handshake costs about a millisecond.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: pod.Name, MinVersion: tls.VersionTLS13}}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	st := &api.Status{}
	if err := json.NewDecoder(resp.Body).Decode(st); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if st.Pod != pod.Name {
		// An address reused by another pod must not speak for this one.
		return nil, fmt.Errorf("%s answered for pod %q, not %q", url, st.Pod, pod.Name)
	}
	return st, nil
}

// readAgents reads every pod's agent concurrently, once; a pod whose agent
// does not answer is absent from the result. An agent that was silent in
// the last pass gets a short timeout: a frozen leader must not slow down
// every pass of its own failover.
func (r *ReplicaSetReconciler) readAgents(ctx context.Context, key types.NamespacedName, pods []corev1.Pod,
	roots *x509.CertPool) map[string]*api.Status {
	reader := r.Agents
	if reader == nil {
		reader = NewHTTPAgentReader()
	}
	r.memory.mu.Lock()
	silent := maps.Clone(r.memory.get(key).silent)
	r.memory.mu.Unlock()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]*api.Status{}
	for i := range pods {
		pod := &pods[i]
		wg.Go(func() {
			timeout := time.Second
			if silent[pod.Name] {
				timeout = 150 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := reader.Status(ctx, pod, roots)
			if err != nil {
				return
			}
			mu.Lock()
			out[pod.Name] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	now := map[string]bool{}
	for i := range pods {
		if out[pods[i].Name] == nil {
			now[pods[i].Name] = true
		}
	}
	r.memory.mu.Lock()
	r.memory.get(key).silent = now
	r.memory.mu.Unlock()
	return out
}
