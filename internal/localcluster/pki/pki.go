// Package pki makes the certificates of the local cluster: one CA, the API
// server's serving certificate and a client certificate per component. It
// writes PEM files and reuses them when they exist, so that bringing the
// cluster up twice keeps kubeconfigs valid.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity of every certificate: a local cluster lives for days, not years.
const validity = 365 * 24 * time.Hour

// CA is a certificate authority whose key is at hand.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// Paths names the PEM files of one certificate in a directory.
type Paths struct{ Cert, Key string }

// PathsFor returns dir/name.crt and dir/name.key.
func PathsFor(dir, name string) Paths {
	return Paths{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// LoadOrCreateCA reads the CA in dir, or makes one.
func LoadOrCreateCA(dir string) (*CA, error) {
	p := PathsFor(dir, "ca")
	if certPEM, err := os.ReadFile(p.Cert); err == nil {
		keyPEM, err := os.ReadFile(p.Key)
		if err != nil {
			return nil, err
		}
		cert, key, err := parse(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "regent-local-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	certPEM, keyPEM, err := encode(der, key)
	if err != nil {
		return nil, err
	}
	if err := write(p, certPEM, keyPEM); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// Request describes a certificate to issue.
type Request struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Server       bool
}

// Issue writes a certificate and key signed by ca into p, unless both
// files exist already.
func (ca *CA) Issue(p Paths, req Request) error {
	if exists(p.Cert) && exists(p.Key) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Server {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := encode(der, key)
	if err != nil {
		return err
	}
	return write(p, certPEM, keyPEM)
}

// ServiceAccountKey writes the RSA key pair that signs service account
// tokens (dir/sa.key, dir/sa.pub), unless it exists.
func ServiceAccountKey(dir string) (key, pub string, err error) {
	key, pub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if exists(key) && exists(pub) {
		return key, pub, nil
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return key, pub, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func parse(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	return cert, key, err
}

func write(p Paths, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(filepath.Dir(p.Cert), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(p.Key, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.Cert, certPEM, 0o644)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
