package dataplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
)

// Every connection to a pod runs over TLS with the cluster's CA, as in a
// real cluster: the test is a client like any other.

// newCA makes the CA of a cluster the test runs without the operator; it
// issues the pods' Secrets as the operator would (issueCertificate).
func (c *cluster) newCA(t testing.TB) {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("db", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.ca, err = pki.ParseCA(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	c.caPEM = certPEM
}

// issueCertificate writes Secret <pod>-tls for p, naming its name and
// address, as the operator does.
func (c *cluster) issueCertificate(t testing.TB, p *pod) {
	t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(pki.Member{Pod: p.name, IPs: []net.IP{net.ParseIP(p.ip)}}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: names.PodTLSSecret(p.name),
		Labels: names.Labels("db")}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{pki.CertKey: certPEM, pki.KeyKey: keyPEM, pki.CACertKey: c.caPEM}}
	if _, err := cs.CoreV1().Secrets(c.ns).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// trustCA gives p the cluster's CA, as a pool and as a file for libpq.
func (c *cluster) trustCA(t testing.TB, p *pod) {
	t.Helper()
	if c.caPEM == nil {
		cm, err := cs.CoreV1().ConfigMaps(c.ns).Get(t.Context(), names.CA("db"), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the operator's CA: %v", err)
		}
		c.caPEM = []byte(cm.Data[pki.CACertKey])
	}
	roots, err := pki.Pool(c.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	p.roots, p.caFile = roots, filepath.Join(p.logDir, "ca.crt")
	if err := os.WriteFile(p.caFile, c.caPEM, 0o644); err != nil { //nolint:gosec // a CA certificate is public
		t.Fatal(err)
	}
}

// https is a client of p's agent that checks its certificate names p.
func (p *pod) https() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: p.roots, ServerName: p.name, MinVersion: tls.VersionTLS13}}}
}

// agentURL is the URL of path on p's agent.
func (p *pod) agentURL(path string) string {
	return "https://" + net.JoinHostPort(p.ip, "8008") + path
}

// connect logs in to p's PostgreSQL as postgres over TLS, checking that
// its certificate names p (verify-full, by name: an address may be reused).
func (p *pod) connect(ctx context.Context, timeout time.Duration) (*pgx.Conn, error) {
	pw := p.password
	if pw == "" {
		pw = superPW
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=app connect_timeout=%d "+
		"sslmode=verify-full sslrootcert=%s", p.ip, pw, int(timeout.Seconds()), p.caFile))
	if err != nil {
		return nil, err
	}
	cfg.TLSConfig.ServerName = p.name
	return pgx.ConnectConfig(ctx, cfg)
}
