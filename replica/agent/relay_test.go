package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/regent-dev/regent/internal/pki"
	"github.com/regent-dev/regent/replica/api"
)

// testCA is a cluster's CA that issues key pairs as the operator does.
type testCA struct {
	t  *testing.T
	ca *pki.CA
}

func newTestCA(t *testing.T, cluster string) *testCA {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA(cluster, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, ca: ca}
}

// secret is pod's Secret <pod>-tls.
func (c *testCA) secret(pod string) *corev1.Secret {
	c.t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(pki.Member{Pod: pod}, time.Now(), time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1"},
		Data: map[string][]byte{pki.CertKey: certPEM, pki.KeyKey: keyPEM, pki.CACertKey: c.ca.CertPEM}}
}

func (c *testCA) pair(pod string) []tls.Certificate {
	c.t.Helper()
	s := c.secret(pod)
	pair, err := tls.X509KeyPair(s.Data[pki.CertKey], s.Data[pki.KeyKey])
	if err != nil {
		c.t.Fatal(err)
	}
	return []tls.Certificate{pair}
}

// The leader's end of the relay admits only a member of its cluster: a
// client without a certificate, with one of another cluster's CA, or
// naming another pod than its certificate does is refused, and so is a
// handshake that is too long, malformed, or names a pod that cannot be a
// member. No slot is made, no WAL file is served for a stranger, and each
// refusal is counted by reason.
func TestRelayRefusesStrangersAndEndlessHandshakes(t *testing.T) {
	ca := newTestCA(t, "db")
	a := New(Config{Cluster: "db", Pod: "db-0", RunDir: t.TempDir(), Log: logr.Discard(), Clock: clock.RealClock{}})
	if err := a.tls.load(ca.secret("db-0"), "db-0"); err != nil {
		t.Fatal(err)
	}
	a.ls.mode, a.ls.epoch, a.ls.deadline = api.ModeLeader, 3, time.Now().Add(time.Hour)
	a.members.replicas.Store(3)
	member, other := ca.pair("db-1"), newTestCA(t, "other").pair("db-1")
	// A peer that starts a TLS handshake and never finishes it is cut.
	t.Run("a handshake that never ends", func(t *testing.T) {
		defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
		handshakeTimeout = 200 * time.Millisecond
		before := testutil.ToFloat64(a.relayRefused.WithLabelValues("TLS"))
		server, client := net.Pipe()
		defer client.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.acceptRelay(context.Background(), tls.Server(server, a.serverConfig(true)))
		}()
		go func() { _, _ = client.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}) }() // a record header, then silence
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the relay still waits for the handshake")
		}
		if n := testutil.ToFloat64(a.relayRefused.WithLabelValues("TLS")) - before; n != 1 {
			t.Errorf("regent_agent_relay_refused_total{reason=\"TLS\"} rose by %v, want 1", n)
		}
	})
	for _, tc := range []struct {
		name string
		// cert is the client's (none when nil); plain skips TLS.
		cert             []tls.Certificate
		plain            bool
		hello, want, why string
	}{
		{name: "no certificate", hello: "REGENT-RELAY/1 epoch=3 pod=db-1\n", why: "Certificate"},
		{name: "another cluster's certificate", cert: other, hello: "REGENT-RELAY/1 epoch=3 pod=db-1\n", why: "Certificate"},
		{name: "no TLS at all", plain: true, hello: "REGENT-RELAY/1 epoch=3 pod=db-1\n", why: "TLS"},
		{name: "TLS garbage", plain: true, hello: "\x16\x03\x01\x00\x05hello\n", why: "TLS"},
		{name: "a member's certificate with another pod's name", cert: member, hello: "REGENT-RELAY/1 epoch=3 pod=db-2\n",
			want: "NO the handshake names db-2, the certificate db-1", why: "CertificateMismatch"},
		{name: "a WAL file in another pod's name", cert: member, hello: "REGENT-WAL/1 epoch=3 pod=db-2 file=000000010000000000000002\n",
			want: "NO the handshake names db-2, the certificate db-1", why: "CertificateMismatch"},
		{name: "a pod of another cluster", cert: member, hello: "REGENT-RELAY/1 epoch=3 pod=other-1\n",
			want: `NO "other-1" is not a member of cluster db`, why: "NotAMember"},
		{name: "a made-up slot name", cert: member, hello: "REGENT-RELAY/1 epoch=3 pod=intruder-slot\n",
			want: `NO "intruder-slot" is not a member of cluster db`, why: "NotAMember"},
		{name: "an ordinal past the largest cluster", cert: member, hello: "REGENT-RELAY/1 epoch=3 pod=db-9\n",
			want: `NO "db-9" is not a member of cluster db`, why: "NotAMember"},
		{name: "itself", cert: member, hello: "REGENT-RELAY/1 epoch=3 pod=db-0\n",
			want: `NO "db-0" is not a member of cluster db`, why: "NotAMember"},
		{name: "garbage", cert: member, hello: "GET / HTTP/1.1\n", want: "NO bad handshake", why: "Malformed"},
		{name: "an endless line", cert: member, hello: strings.Repeat("x", 64<<10), want: "NO handshake too long", why: "TooLong"},
		{name: "a member of an epoch it does not lead", cert: member, hello: "REGENT-RELAY/1 epoch=2 pod=db-1\n",
			want: "NO not the leader of that epoch", why: "NotTheLeader"},
		{name: "a member scaled away", cert: ca.pair("db-3"), hello: "REGENT-RELAY/1 epoch=3 pod=db-3\n",
			want: `NO "db-3" is no longer a member of cluster db (3 members)`, why: "NotAMember"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(a.relayRefused.WithLabelValues(tc.why))
			server, raw := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				a.acceptRelay(context.Background(), tls.Server(server, a.serverConfig(true)))
			}()
			client := raw
			if !tc.plain {
				client = tls.Client(raw, &tls.Config{Certificates: tc.cert, RootCAs: a.tls.roots, ServerName: "db-0",
					MinVersion: tls.VersionTLS13})
			}
			go func() { _, _ = client.Write([]byte(tc.hello)) }()
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(client)
			answer, err := r.ReadString('\n')
			switch {
			case tc.want == "" && err == nil:
				t.Errorf("answered %q to a peer TLS should have refused", strings.TrimSpace(answer))
			case tc.want != "" && (err != nil || strings.TrimSpace(answer) != tc.want):
				t.Errorf("answered %q (%v), want %q", strings.TrimSpace(answer), err, tc.want)
			}
			// Read to the end, as a TCP peer's kernel would: the server's
			// close notification must not wait on a synchronous pipe.
			_, _ = io.Copy(io.Discard, r)
			_ = client.Close()
			<-done
			if n := testutil.ToFloat64(a.relayRefused.WithLabelValues(tc.why)) - before; n != 1 {
				t.Errorf("regent_agent_relay_refused_total{reason=%q} rose by %v, want 1", tc.why, n)
			}
		})
	}
}
