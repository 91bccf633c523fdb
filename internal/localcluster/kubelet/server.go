package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
	"k8s.io/klog/v2"
)

// ServingConfig is where the node's API listens (the port the API server
// reaches on the node's InternalIP for kubectl logs) and the certificates
// it uses.
type ServingConfig struct {
	Port int
	// CertFile and KeyFile are the node's serving certificate.
	CertFile, KeyFile string
	// ClientCAFile verifies the certificates of clients (the API server's
	// kubelet client certificate).
	ClientCAFile string
}

// serve runs the node's API until ctx ends: GET
// /containerLogs/{namespace}/{pod}/{container}, as a kubelet serves it to
// the API server, and /healthz. Every request needs a client certificate
// from the cluster's CA, and the rights a SubjectAccessReview grants.
func (k *Kubelet) serve(ctx context.Context) error {
	sc := k.cfg.Serving
	pair, err := tls.LoadX509KeyPair(sc.CertFile, sc.KeyFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(sc.ClientCAFile)
	if err != nil {
		return fmt.Errorf("client CA: %w", err)
	}
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("client CA %s holds no certificate", sc.ClientCAFile)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", k.containerLogs)
	srv := &http.Server{
		Addr:              net.JoinHostPort(k.hostIP(), strconv.Itoa(sc.Port)),
		Handler:           k.authorized(mux),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
		},
		BaseContext: func(net.Listener) context.Context { return klog.NewContext(ctx, k.log) },
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// authorized asks the API server whether the certificate's user may use
// this node's API, as a kubelet in webhook authorization mode does: every
// path but a few named ones is the node's "proxy" subresource.
func (k *Kubelet) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cert := r.TLS.PeerCertificates[0]
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   cert.Subject.CommonName,
			Groups: cert.Subject.Organization,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "get", Resource: "nodes", Subresource: "proxy", Name: k.cfg.Node,
			},
		}}
		res, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), sar, metav1.CreateOptions{})
		switch {
		case err != nil:
			http.Error(w, "authorization: "+err.Error(), http.StatusInternalServerError)
		case !res.Status.Allowed:
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=get, resource=nodes, subresource=proxy)",
				sar.Spec.User), http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// containerLogs serves a container's log with the options of
// corev1.PodLogOptions, read by the kubelet's own CRI log reader.
func (k *Kubelet) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, previous, stream, err := logOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pw := k.workerOf(ns, name)
	if pw == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on node %s", ns, name, k.cfg.Node), http.StatusNotFound)
		return
	}
	path, running, err := pw.logOf(container, previous)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := &flushWriter{w: w}
	if f, ok := w.(http.Flusher); ok && opts.Follow {
		out.flush = f
	}
	var stdout, stderr *flushWriter
	if stream != corev1.LogStreamStderr {
		stdout = out
	}
	if stream != corev1.LogStreamStdout {
		stderr = out
	}
	w.Header().Set("Content-Type", "text/plain")
	err = crilogs.ReadLogs(r.Context(), path, container, opts, instanceStatus{running: running},
		writerOrNil(stdout), writerOrNil(stderr))
	if err != nil && r.Context().Err() == nil {
		k.log.Info("Reading a container log failed", "pod", ns+"/"+name, "container", container, "error", err.Error())
	}
}

// logOptions reads the query the API server builds from PodLogOptions.
func logOptions(r *http.Request) (opts *crilogs.LogOptions, previous bool, stream string, err error) {
	q := r.URL.Query()
	opts = &crilogs.LogOptions{}
	boolean := func(key string) bool {
		v, perr := strconv.ParseBool(q.Get(key))
		if q.Has(key) && perr != nil && err == nil {
			err = fmt.Errorf("%s=%q: not a boolean", key, q.Get(key))
		}
		return v
	}
	integer := func(key string) *int64 {
		if !q.Has(key) {
			return nil
		}
		v, perr := strconv.ParseInt(q.Get(key), 10, 64)
		if (perr != nil || v < 0) && err == nil {
			err = fmt.Errorf("%s=%q: not a count", key, q.Get(key))
		}
		return &v
	}
	opts.Follow, opts.Timestamp, previous = boolean("follow"), boolean("timestamps"), boolean("previous")
	opts.TailLines, opts.LimitBytes = integer("tailLines"), integer("limitBytes")
	if s := integer("sinceSeconds"); s != nil {
		opts.Since = time.Now().Add(-time.Duration(*s) * time.Second)
	}
	if q.Has("sinceTime") {
		t, perr := time.Parse(time.RFC3339, q.Get("sinceTime"))
		if perr != nil && err == nil {
			err = fmt.Errorf("sinceTime=%q: not an RFC 3339 time", q.Get("sinceTime"))
		}
		opts.Since = t
	}
	stream = q.Get("stream")
	if stream != "" && stream != corev1.LogStreamAll && stream != corev1.LogStreamStdout && stream != corev1.LogStreamStderr {
		err = fmt.Errorf("stream=%q: want %s, %s or %s", stream, corev1.LogStreamAll, corev1.LogStreamStdout, corev1.LogStreamStderr)
	}
	return opts, previous, stream, err
}

// workerOf finds the worker of a pod of this node by name.
func (k *Kubelet) workerOf(namespace, name string) *podWorker {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workers {
		w.mu.Lock()
		match := w.pod.Namespace == namespace && w.pod.Name == name
		w.mu.Unlock()
		if match {
			return w
		}
	}
	return nil
}

// logOf returns the log file of a container's current instance (the
// running one, or the last to end) or of the one before, and a function
// that says whether that instance still runs.
func (w *podWorker) logOf(container string, previous bool) (string, func() bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cs, ok := w.containers[container]
	if !ok {
		return "", nil, fmt.Errorf("container %s is not valid for pod %s", container, w.pod.Name)
	}
	current := cs.restartCount
	if _, err := os.Stat(w.logPath(container, current)); err != nil {
		// Between an exit and the restart, the instance that ended is the
		// current one.
		current--
	}
	if current < 0 {
		reason := "ContainerCreating"
		if cs.state.Waiting != nil {
			reason = cs.state.Waiting.Reason
		}
		return "", nil, fmt.Errorf("container %q in pod %q is waiting to start: %s", container, w.pod.Name, reason)
	}
	index := current
	if previous {
		index--
		if _, err := os.Stat(w.logPath(container, index)); index < 0 || err != nil {
			return "", nil, fmt.Errorf("previous terminated container %q in pod %q not found", container, w.pod.Name)
		}
	}
	running := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return cs.state.Running != nil && cs.restartCount == index
	}
	return w.logPath(container, index), running, nil
}

// instanceStatus is the one runtime call the CRI log reader makes while
// following a log: whether the container instance still runs.
type instanceStatus struct {
	internalapi.RuntimeService
	running func() bool
}

func (s instanceStatus) ContainerStatus(_ context.Context, id string, _ bool) (*runtimeapi.ContainerStatusResponse, error) {
	state := runtimeapi.ContainerState_CONTAINER_EXITED
	if s.running() {
		state = runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: id, State: state}}, nil
}

// flushWriter sends each write at once when following a log.
type flushWriter struct {
	w     http.ResponseWriter
	flush http.Flusher
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if f.flush != nil {
		f.flush.Flush()
	}
	return n, err
}

// writerOrNil keeps a nil *flushWriter a nil io.Writer: the reader skips a
// stream whose writer is nil.
func writerOrNil(f *flushWriter) io.Writer {
	if f == nil {
		return nil
	}
	return f
}
