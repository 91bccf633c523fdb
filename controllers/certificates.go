package controllers

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
)

// Every cluster has its own CA, made by the operator on the first pass and
// kept in Secret <name>-ca; its certificate is published in ConfigMap
// <name>-ca for clients. Each member has a key and a certificate from it in
// Secret <pod>-tls, which its agent reads and reloads (docs/architecture.md,
// "Who may reach the data").

// caLifetime is the CA's: it outlives many member certificates. Replacing
// a CA is not automated yet (docs/architecture.md).
const caLifetime = 10 * 365 * 24 * time.Hour

// certificates is what a pass knows of the cluster's certificates.
type certificates struct {
	ca    *pki.CA
	roots *x509.CertPool
	// expires is the first member certificate's end (zero before any).
	expires time.Time
}

// reconcileCA returns the cluster's CA, making it when the cluster has
// none, and publishes its certificate.
func (r *ReplicaSetReconciler) reconcileCA(ctx context.Context, rs *regentv1.ReplicaSet) (*certificates, error) {
	name := names.CA(rs.Name)
	secret := &corev1.Secret{}
	if err := r.ensureOurs(ctx, rs, secret, name); err != nil {
		return nil, err
	}
	certPEM, keyPEM := secret.Data[pki.CACertKey], secret.Data[pki.CAKeyKey]
	if secret.Name == "" {
		var err error
		if certPEM, keyPEM, err = pki.NewCA(rs.Name, r.now(), caLifetime); err != nil {
			return nil, err
		}
		apply := corev1ac.Secret(name, rs.Namespace).WithLabels(names.Labels(rs.Name)).
			WithOwnerReferences(ownerReference(rs)).WithType(corev1.SecretTypeOpaque).
			WithData(map[string][]byte{pki.CACertKey: certPEM, pki.CAKeyKey: keyPEM})
		if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return nil, fmt.Errorf("create Secret %s: %w", name, err)
		}
		r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, regentv1.EventCertificateIssued, "CreateCA",
			"Made the cluster's CA in Secret %s, valid until %s", name, r.now().Add(caLifetime).UTC().Format(time.RFC3339))
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the Secret %s holds no usable CA (%w): delete it to have a new one made, and every member's certificate reissued", name, err)
	}
	roots, err := pki.Pool(certPEM)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	if err := r.ensureOurs(ctx, rs, cm, name); err != nil {
		return nil, err
	}
	if cm.Data[pki.CACertKey] != string(certPEM) {
		apply := corev1ac.ConfigMap(name, rs.Namespace).WithLabels(names.Labels(rs.Name)).
			WithOwnerReferences(ownerReference(rs)).WithData(map[string]string{pki.CACertKey: string(certPEM)})
		if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return nil, fmt.Errorf("publish the CA in ConfigMap %s: %w", name, err)
		}
	}
	return &certificates{ca: ca, roots: roots}, nil
}

// reconcileMemberCertificates gives every member a certificate of the
// cluster's CA that names it as it is now, renewing it once two thirds of
// its life have passed or when the spec asks for a shorter one.
func (r *ReplicaSetReconciler) reconcileMemberCertificates(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	certs := obs.certificates
	ips := map[string]string{}
	for i := range obs.pods {
		ips[obs.pods[i].Name] = obs.pods[i].Status.PodIP
	}
	now, lifetime := r.now(), rs.CertificateLifetime()
	certs.expires = time.Time{}
	for i := range int(rs.DesiredReplicas()) {
		member := memberNames(rs, names.Pod(rs.Name, i), ips[names.Pod(rs.Name, i)])
		name := names.PodTLSSecret(member.Pod)
		secret := &corev1.Secret{}
		if err := r.ensureOurs(ctx, rs, secret, name); err != nil {
			return err
		}
		cert, _ := pki.ParseCert(secret.Data[pki.CertKey])
		if cert == nil || !current(cert, certs.ca, member, now, lifetime) {
			certPEM, keyPEM, err := certs.ca.Issue(member, now, lifetime)
			if err != nil {
				return err
			}
			apply := corev1ac.Secret(name, rs.Namespace).WithLabels(names.Labels(rs.Name)).
				WithOwnerReferences(ownerReference(rs)).WithType(corev1.SecretTypeTLS).
				WithData(map[string][]byte{pki.CertKey: certPEM, pki.KeyKey: keyPEM, pki.CACertKey: certs.ca.CertPEM})
			if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply Secret %s: %w", name, err)
			}
			if cert, err = pki.ParseCert(certPEM); err != nil {
				return err
			}
			r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, regentv1.EventCertificateIssued, "IssueCertificate",
				"Issued %s's certificate in Secret %s, valid until %s", member.Pod, name, cert.NotAfter.UTC().Format(time.RFC3339))
		}
		certificateExpiry.WithLabelValues(rs.Namespace, rs.Name, member.Pod).Set(float64(cert.NotAfter.Unix()))
		if certs.expires.IsZero() || cert.NotAfter.Before(certs.expires) {
			certs.expires = cert.NotAfter
		}
		obs.requeue(pki.RenewAt(cert).Sub(now))
	}
	return r.removeFormerMembersCertificates(ctx, rs, ips)
}

// removeFormerMembersCertificates deletes the key Secrets of the ordinals
// past replicas once their pods are gone: a scaled-down member's key is
// not left lying around (its certificate stays valid until it expires).
func (r *ReplicaSetReconciler) removeFormerMembersCertificates(ctx context.Context, rs *regentv1.ReplicaSet, ips map[string]string) error {
	for i := int(rs.DesiredReplicas()); i < names.MaxReplicas; i++ {
		pod := names.Pod(rs.Name, i)
		if _, running := ips[pod]; running {
			continue
		}
		secret := &corev1.Secret{}
		err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: names.PodTLSSecret(pod)}, secret)
		if apierrors.IsNotFound(err) || err == nil && !metav1.IsControlledBy(secret, rs) {
			continue
		}
		if err != nil {
			return err
		}
		if err := client.IgnoreNotFound(r.Delete(ctx, secret)); err != nil {
			return fmt.Errorf("delete Secret %s: %w", secret.Name, err)
		}
	}
	return nil
}

// current reports whether cert can stay: signed by the CA, naming the
// member as it is, not due for renewal, and no longer-lived than asked.
func current(cert *x509.Certificate, ca *pki.CA, m pki.Member, now time.Time, lifetime time.Duration) bool {
	wantIPs := make([]string, 0, len(m.IPs))
	for _, ip := range m.IPs {
		wantIPs = append(wantIPs, ip.String())
	}
	gotIPs := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		gotIPs = append(gotIPs, ip.String())
	}
	// A pod without an address (being replaced) keeps the one it had.
	ipsMatch := len(wantIPs) == 0 || slices.Equal(gotIPs, wantIPs)
	return cert.CheckSignatureFrom(ca.Cert) == nil && bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) &&
		cert.Subject.CommonName == m.Pod && slices.Equal(cert.DNSNames, append([]string{m.Pod}, m.DNSNames...)) &&
		ipsMatch && pki.Fresh(cert, now) &&
		cert.NotAfter.Sub(cert.NotBefore) <= lifetime+10*time.Minute
}

// memberNames is what a member's certificate names: the pod, its name in
// the pods' headless Service, the Services clients use, and its address.
func memberNames(rs *regentv1.ReplicaSet, pod, ip string) pki.Member {
	m := pki.Member{Pod: pod}
	for _, host := range []string{pod + "." + names.PodsService(rs.Name), names.LeaderService(rs.Name), names.FollowersService(rs.Name)} {
		m.DNSNames = append(m.DNSNames, host, host+"."+rs.Namespace, host+"."+rs.Namespace+".svc",
			host+"."+rs.Namespace+".svc.cluster.local")
	}
	if addr := net.ParseIP(ip); addr != nil {
		m.IPs = []net.IP{addr}
	}
	return m
}
