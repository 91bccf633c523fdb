package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/pki"
)

// When a member's certificate is reissued: after two thirds of its life,
// for a new CA, a new address or a shorter lifetime; never just because
// its pod has no address for a while.
func TestMemberCertificateRenewal(t *testing.T) {
	now := time.Now()
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"}}
	newCA := func() *pki.CA {
		certPEM, keyPEM, err := pki.NewCA("db", now, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := pki.ParseCA(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	ca, other := newCA(), newCA()
	withIP := memberNames(rs, "db-0", "10.0.0.1")
	certPEM, _, err := ca.Issue(withIP, now, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		ca       *pki.CA
		member   pki.Member
		at       time.Duration
		lifetime time.Duration
		keep     bool
	}{
		{"fresh", ca, withIP, time.Minute, 90 * time.Minute, true},
		{"the pod has no address for now", ca, memberNames(rs, "db-0", ""), time.Minute, 90 * time.Minute, true},
		{"a longer lifetime waits for the renewal", ca, withIP, time.Minute, 180 * time.Minute, true},
		{"two thirds of its life passed", ca, withIP, 61 * time.Minute, 90 * time.Minute, false},
		{"a new address", ca, memberNames(rs, "db-0", "10.0.0.2"), time.Minute, 90 * time.Minute, false},
		{"another CA", other, withIP, time.Minute, 90 * time.Minute, false},
		{"another pod", ca, memberNames(rs, "db-1", "10.0.0.1"), time.Minute, 90 * time.Minute, false},
		{"a shorter lifetime", ca, withIP, time.Minute, 10 * time.Minute, false},
	} {
		if got := current(cert, tc.ca, tc.member, now.Add(tc.at), tc.lifetime); got != tc.keep {
			t.Errorf("%s: kept %v, want %v", tc.name, got, tc.keep)
		}
	}
}
