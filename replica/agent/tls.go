package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
)

// Every connection between pods, and the operator's reads of /status, run
// over TLS with certificates of the cluster's own CA (docs/architecture.md,
// "Who may reach the data"). The operator keeps this pod's key and
// certificate in Secret <pod>-tls and renews them; the agent follows the
// Secret, serves and dials with the newest pair, and hands it to
// PostgreSQL through instance, which reloads without a restart.

// memberTLS is the pod's current key pair and the cluster's CA.
type memberTLS struct {
	mu      sync.Mutex
	pair    *tls.Certificate
	roots   *x509.CertPool
	version string // the Secret's resourceVersion the pair came from
	// certPEM and keyPEM go to instance; installed is the version it has.
	certPEM, keyPEM []byte
	installed       string
	notAfter        time.Time
}

// load checks a Secret's pair (it must name pod and chain to the CA it
// carries) and makes it the current one.
func (m *memberTLS) load(secret *corev1.Secret, pod string) error {
	certPEM, keyPEM, caPEM := secret.Data[pki.CertKey], secret.Data[pki.KeyKey], secret.Data[pki.CACertKey]
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	roots, err := pki.Pool(caPEM)
	if err != nil {
		return err
	}
	leaf := pair.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: pod,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return err
	}
	if leaf.Subject.CommonName != pod {
		return fmt.Errorf("the certificate names %q", leaf.Subject.CommonName)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pair, m.roots, m.version = &pair, roots, secret.ResourceVersion
	m.certPEM, m.keyPEM, m.notAfter = certPEM, keyPEM, leaf.NotAfter
	return nil
}

// current returns the pair and the CA, or an error before the first.
func (m *memberTLS) current() (*tls.Certificate, *x509.CertPool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pair == nil {
		return nil, nil, errors.New("no certificate yet")
	}
	return m.pair, m.roots, nil
}

// expiry is when the current certificate expires (zero before the first).
func (m *memberTLS) expiry() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.notAfter
}

// serverConfig is a listener's: the pod's certificate, and for the relay
// (peers true) a client certificate of the cluster's CA, required. Each
// handshake takes the newest pair.
func (a *Agent) serverConfig(peers bool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pair, roots, err := a.tls.current()
			if err != nil {
				return nil, err
			}
			c := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*pair}}
			if peers {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, roots
			}
			return c, nil
		}}
}

// clientConfig is for dialing pod's agent: this pod's certificate, and the
// peer's must name pod.
func (a *Agent) clientConfig(pod string) (*tls.Config, error) {
	pair, roots, err := a.tls.current()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*pair}, RootCAs: roots,
		ServerName: pod}, nil
}

// watchCertificate follows Secret <pod>-tls: each version the operator
// writes replaces the pair at once (new handshakes use it; open
// connections keep theirs) and wakes keepTLS to hand it to PostgreSQL.
func (a *Agent) watchCertificate(ctx context.Context) {
	name := names.PodTLSSecret(a.cfg.Pod)
	update := func(obj any) {
		secret, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		if err := a.tls.load(secret, a.cfg.Pod); err != nil {
			a.log.Error(err, "Refusing the certificate in Secret "+name)
			return
		}
		a.log.Info("Loaded the pod's certificate", "secret", name, "notAfter", a.tls.expiry().UTC())
		select {
		case a.tlsChanged <- struct{}{}:
		default:
		}
	}
	lw := cache.NewListWatchFromClient(a.cfg.Client.CoreV1().RESTClient(), "secrets", a.cfg.Namespace,
		fields.OneTermEqualSelector("metadata.name", name))
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{AddFunc: update, UpdateFunc: func(_, obj any) { update(obj) }}})
	go informer.RunWithContext(ctx)
}

// installTLS hands the current pair to instance unless it has it; it
// reports whether instance has the current pair.
func (a *Agent) installTLS(ctx context.Context) bool {
	a.tls.mu.Lock()
	version, installed, certPEM, keyPEM := a.tls.version, a.tls.installed, a.tls.certPEM, a.tls.keyPEM
	a.tls.mu.Unlock()
	if version == "" {
		return false
	}
	if version == installed {
		return true
	}
	if err := a.instance.SetTLS(ctx, certPEM, keyPEM); err != nil {
		a.log.V(1).Info("PostgreSQL has not taken the certificate yet", "error", err.Error())
		return false
	}
	a.tls.mu.Lock()
	a.tls.installed = version
	a.tls.mu.Unlock()
	return true
}

// awaitTLS waits until the pod has a certificate and instance has it:
// nothing that serves or dials, and no PostgreSQL, starts before.
func (a *Agent) awaitTLS(ctx context.Context) error {
	a.watchCertificate(ctx)
	start, said := a.clock.Now(), time.Duration(0)
	for !a.installTLS(ctx) {
		if waited := a.clock.Since(start); waited-said >= 10*time.Second {
			said = waited
			a.log.Info("Waiting for the pod's certificate", "secret", names.PodTLSSecret(a.cfg.Pod),
				"waited", waited.Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.tlsChanged:
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// keepTLS hands every renewed pair to instance, retrying until it takes it.
func (a *Agent) keepTLS(ctx context.Context) {
	everySecondOr(ctx, a.tlsChanged, func(ctx context.Context) { a.installTLS(ctx) })
}
