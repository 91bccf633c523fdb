package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

func newCA(t *testing.T, cluster string) *CA {
	t.Helper()
	certPEM, keyPEM, err := NewCA(cluster, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func keyPair(t *testing.T, ca *CA, pod string, lifetime time.Duration) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(Member{Pod: pod, DNSNames: []string{"db-leader.ns.svc"}}, time.Now(), lifetime)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// handshake runs a mutual-TLS handshake between a client with clientCert
// (none when empty) and a server of ca's cluster, and returns the pod the
// server saw, or the server's error.
func handshake(t *testing.T, ca *CA, clientCert []tls.Certificate, serverName string) (string, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{keyPair(t, ca, "db-0", time.Hour)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: mustPool(t, ca), MinVersion: tls.VersionTLS13})
	cli := tls.Client(c, &tls.Config{Certificates: clientCert, RootCAs: mustPool(t, ca), ServerName: serverName,
		MinVersion: tls.VersionTLS13})
	clientErr := make(chan error, 1)
	go func() {
		err := cli.Handshake()
		if err == nil {
			// TLS 1.3 reports a refused client certificate on the first read.
			_, err = cli.Read(make([]byte, 1))
		}
		clientErr <- err
	}()
	if err := srv.Handshake(); err != nil {
		return "", err
	}
	_, _ = srv.Write([]byte{1})
	if err := <-clientErr; err != nil {
		return "", errors.Join(errors.New("client"), err)
	}
	return PeerPod(srv.ConnectionState())
}

func mustPool(t *testing.T, ca *CA) *x509.CertPool {
	t.Helper()
	pool, err := Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// Only a member's certificate from the cluster's own CA gets through, and
// the server learns which pod it names.
func TestMutualTLSAdmitsOnlyMembersOfTheCluster(t *testing.T) {
	ca, other := newCA(t, "db"), newCA(t, "other")
	pod, err := handshake(t, ca, []tls.Certificate{keyPair(t, ca, "db-1", time.Hour)}, "db-0")
	if err != nil || pod != "db-1" {
		t.Fatalf("a member: pod %q, %v", pod, err)
	}
	if _, err := handshake(t, ca, nil, "db-0"); err == nil {
		t.Error("a client without a certificate was admitted")
	}
	if _, err := handshake(t, ca, []tls.Certificate{keyPair(t, other, "db-1", time.Hour)}, "db-0"); err == nil {
		t.Error("a certificate of another cluster's CA was admitted")
	}
	if _, err := handshake(t, ca, []tls.Certificate{keyPair(t, ca, "db-1", time.Hour)}, "db-2"); err == nil {
		t.Error("the client accepted db-0's certificate for db-2")
	}
	if _, err := handshake(t, ca, []tls.Certificate{keyPair(t, ca, "db-1", -time.Minute)}, "db-0"); err == nil {
		t.Error("an expired certificate was admitted")
	}
}

func TestRenewalIsDueAfterTwoThirdsOfALife(t *testing.T) {
	ca := newCA(t, "db")
	now := time.Now()
	certPEM, _, err := ca.Issue(Member{Pod: "db-0"}, now, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !Fresh(cert, now.Add(59*time.Minute)) || Fresh(cert, now.Add(61*time.Minute)) {
		t.Errorf("renewal due at %s, want an hour after %s", RenewAt(cert), now)
	}
	// Never past the CA's own end.
	long, _, err := ca.Issue(Member{Pod: "db-0"}, now, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := ParseCert(long); c.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("a certificate outlives its CA: %s > %s", c.NotAfter, ca.Cert.NotAfter)
	}
}
