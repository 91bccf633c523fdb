package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// startProbes runs the container's startup, readiness and liveness probes
// with the spec's timings until ctx ends. A container without a readiness
// probe is ready once started; a failed liveness (or startup) probe kills
// the container, and the restart policy takes over.
func (w *podWorker) startProbes(ctx context.Context, cs *containerState) {
	spec := cs.spec
	startedCh := make(chan struct{})
	if spec.StartupProbe == nil {
		close(startedCh)
	} else {
		go w.probeLoop(ctx, cs, spec.StartupProbe, "startup", func(ok bool) bool {
			if !ok {
				return true
			}
			w.mu.Lock()
			cs.started = true
			w.mu.Unlock()
			w.markDirty()
			close(startedCh)
			return false
		}, func() { w.restartContainer(cs, "startup probe failed") })
	}
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-startedCh:
		}
		if spec.ReadinessProbe == nil {
			w.setReady(cs, true)
		} else {
			go w.probeLoop(ctx, cs, spec.ReadinessProbe, "readiness", func(ok bool) bool {
				w.setReady(cs, ok)
				return true
			}, func() { w.setReady(cs, false) })
		}
		if spec.LivenessProbe != nil {
			go w.probeLoop(ctx, cs, spec.LivenessProbe, "liveness", func(bool) bool { return true },
				func() { w.restartContainer(cs, "liveness probe failed") })
		}
	}()
}

func (w *podWorker) setReady(cs *containerState, ready bool) {
	w.mu.Lock()
	changed := cs.ready != ready && cs.state.Running != nil
	if cs.state.Running != nil {
		cs.ready = ready
	}
	w.mu.Unlock()
	if changed {
		w.markDirty()
	}
}

func (w *podWorker) restartContainer(cs *containerState, why string) {
	w.k.log.Info("Killing container", "pod", w.key(), "container", cs.spec.Name, "reason", why)
	_ = w.containerCgroup(cs).Kill()
}

// probeLoop runs p every period. onResult sees each result once the
// thresholds agree (successThreshold successes, failureThreshold failures)
// and returns whether to go on; onFailure runs when failureThreshold is
// reached.
func (w *podWorker) probeLoop(ctx context.Context, cs *containerState, p *corev1.Probe, kind string,
	onResult func(ok bool) bool, onFailure func()) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	successThreshold, failureThreshold := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	var successes, failures int32
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		err := w.probeOnce(ctx, cs, p, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes++
			failures = 0
			if successes >= successThreshold && !onResult(true) {
				return
			}
		} else {
			failures++
			successes = 0
			if failures >= failureThreshold {
				w.k.log.V(1).Info("Probe failed", "pod", w.key(), "container", cs.spec.Name, "probe", kind, "error", err.Error())
				onFailure()
				if !onResult(false) {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *podWorker) probeOnce(ctx context.Context, cs *containerState, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	port := func(ps intstr.IntOrString) (string, error) {
		if ps.Type == intstr.Int {
			return strconv.Itoa(ps.IntValue()), nil
		}
		for _, cp := range cs.spec.Ports {
			if cp.Name == ps.StrVal {
				return strconv.Itoa(int(cp.ContainerPort)), nil
			}
		}
		return "", fmt.Errorf("no port named %s", ps.StrVal)
	}
	switch {
	case p.HTTPGet != nil:
		pt, err := port(p.HTTPGet.Port)
		if err != nil {
			return err
		}
		host := p.HTTPGet.Host
		if host == "" {
			host = w.ip
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(host, pt)+p.HTTPGet.Path, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		pt, err := port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(w.ip, pt))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		w.mu.Lock()
		pid := cs.pid
		w.mu.Unlock()
		uid, gid, _ := w.identity(cs)
		// In the container's mount namespace and root, as its user.
		args := append([]string{"-t", strconv.Itoa(pid), "-m", "-r", "-w",
			"-S", strconv.Itoa(uid), "-G", strconv.Itoa(gid), "--"}, p.Exec.Command...)
		out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	return fmt.Errorf("probe has no handler")
}

var probeClient = &http.Client{
	// Like the kubelet: never follow a redirect to another host.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	// Like the kubelet, an HTTPS probe does not check the server's
	// certificate: it asks whether the container answers, not who it is.
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}
