package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
	"github.com/regent-dev/regent/internal/waitfor"
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
	if err := os.WriteFile(p.caFile, c.caPEM, 0o644); err != nil {
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

// servedSerial is the serial of the certificate the server at addr shows
// for name, checked against the cluster's CA.
func (p *pod) servedSerial(addr string, clientCert []tls.Certificate) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: p.roots, ServerName: p.name, Certificates: clientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// postgresSerial is the serial of the certificate p's PostgreSQL shows, and
// when its postmaster started.
func (p *pod) postgresSerial(ctx context.Context) (string, time.Time, error) {
	conn, err := p.connect(ctx, 3*time.Second)
	if err != nil {
		return "", time.Time{}, err
	}
	defer conn.Close(ctx)
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		return "", time.Time{}, fmt.Errorf("%s: not a TLS connection", p.name)
	}
	var started time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&started); err != nil {
		return "", time.Time{}, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), started, nil
}

// secretPair is the key pair in Secret <pod>-tls now.
func (c *cluster) secretPair(t testing.TB, pod string) ([]tls.Certificate, string) {
	t.Helper()
	s, err := cs.CoreV1().Secrets(c.ns).Get(t.Context(), names.PodTLSSecret(pod), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(s.Data[pki.CertKey], s.Data[pki.KeyKey])
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{pair}, pair.Leaf.SerialNumber.String()
}

// Certificates of a minute are renewed by the operator after 40 s; the
// agents and PostgreSQL take the new ones without a restart, the relay
// admits a follower with its renewed certificate, and replication goes on.
func TestCertificatesAreRenewedWithoutARestart(t *testing.T) {
	c := operatedCluster(t, "127.0.47", func(rs *regentv1.ReplicaSet) {
		rs.Spec.TLS.CertificateLifetime = &metav1.Duration{Duration: time.Minute}
	})
	for _, p := range c.pods {
		waitfor.Condition(t, 120*time.Second, p.name+" ready", p.ready)
	}
	ctx := t.Context()
	leader := c.pods[0]
	relay, api := net.JoinHostPort(leader.ip, "5433"), net.JoinHostPort(leader.ip, "8008")
	db1, _ := c.secretPair(t, "db-1")
	relaySerial, err := leader.servedSerial(relay, db1)
	if err != nil {
		t.Fatal(err)
	}
	pgSerial, started, err := leader.postgresSerial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := exec1(ctx, leader, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	_, issued := c.secretPair(t, "db-0")
	if issued != relaySerial || issued != pgSerial {
		t.Fatalf("db-0 serves %s (relay) and %s (PostgreSQL), its Secret holds %s", relaySerial, pgSerial, issued)
	}
	renewalAsked := time.Now()
	waitfor.Condition(t, 90*time.Second, "db-0's renewed certificate served by its relay, API and PostgreSQL", func() error {
		_, now := c.secretPair(t, "db-0")
		if now == issued {
			return fmt.Errorf("not renewed yet")
		}
		for what, serve := range map[string]func() (string, error){
			"relay": func() (string, error) { db1, _ := c.secretPair(t, "db-1"); return leader.servedSerial(relay, db1) },
			"API":   func() (string, error) { return leader.servedSerial(api, nil) },
			"PostgreSQL": func() (string, error) {
				s, _, err := leader.postgresSerial(ctx)
				return s, err
			},
		} {
			if got, err := serve(); err != nil || got != now {
				return fmt.Errorf("%s serves %s (%w), the Secret holds %s", what, got, err, now)
			}
		}
		return nil
	})
	t.Logf("renewed and served %s after the first serial was read", time.Since(renewalAsked).Round(time.Second))
	if _, again, err := leader.postgresSerial(ctx); err != nil || !again.Equal(started) {
		t.Errorf("PostgreSQL restarted: started %s, now %s (%v)", started, again, err)
	}
	// A follower's new relay, with renewed certificates on both ends.
	db1Renewed, _ := c.secretPair(t, "db-1")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", relay,
		&tls.Config{RootCAs: leader.roots, ServerName: "db-0", Certificates: db1Renewed, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintln(conn, "REGENT-RELAY/1 epoch=1 pod=db-1")
	answer, _ := bufio.NewReader(conn).ReadString('\n')
	_ = conn.Close()
	if strings.TrimSpace(answer) != "OK" {
		t.Errorf("the leader refused db-1's renewed certificate: %q", answer)
	}
	if err := exec1(ctx, leader, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for _, f := range c.pods[1:] {
		waitfor.Condition(t, 30*time.Second, f.name+" has the row written after the renewal", func() error {
			conn, err := f.conn(ctx)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
				return fmt.Errorf("%d rows, %w", n, err)
			}
			return nil
		})
	}
	rs := &regentv1.ReplicaSet{}
	if err := rtClient(t).Get(ctx, ctrlKey(c.ns), rs); err != nil {
		t.Fatal(err)
	}
	if e := rs.Status.Certificates; e == nil || e.ExpiresAt == nil || e.ExpiresAt.Before(&metav1.Time{Time: renewalAsked}) {
		t.Errorf("status.certificates after the renewal: %+v", e)
	}
}
