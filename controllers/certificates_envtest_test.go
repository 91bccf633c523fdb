package controllers

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/pki"
)

// A cluster gets its own CA and every member a certificate of it, before
// its pod exists, naming the pod and the Services clients use; the CA is
// published for clients, and a pod's certificate follows its address.
func TestEveryMemberGetsACertificateOfTheClustersCA(t *testing.T) {
	ns := newNamespace(t)
	createReplicaSet(t, newReplicaSet(ns, "db"))
	var roots *x509.CertPool
	NewWithT(t).Eventually(func(g Gomega) {
		ca := get(t, g, ns, "db-ca", &corev1.Secret{})
		g.Expect(ca.Data).To(HaveKey(pki.CAKeyKey))
		published := get(t, g, ns, "db-ca", &corev1.ConfigMap{})
		g.Expect(published.Data[pki.CACertKey]).To(Equal(string(ca.Data[pki.CACertKey])))
		app := get(t, g, ns, "db-app", &corev1.Secret{})
		g.Expect(app.Data[pki.CACertKey]).To(Equal(ca.Data[pki.CACertKey]))
		uri, err := url.Parse(string(app.Data["uri"]))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(uri.Query().Get("sslmode")).To(Equal("verify-full"))
		var perr error
		roots, perr = pki.Pool(ca.Data[pki.CACertKey])
		g.Expect(perr).NotTo(HaveOccurred())
		for _, pod := range []string{"db-0", "db-1", "db-2"} {
			s := get(t, g, ns, pod+"-tls", &corev1.Secret{})
			g.Expect(s.Type).To(Equal(corev1.SecretTypeTLS))
			g.Expect(s.Data[pki.CACertKey]).To(Equal(ca.Data[pki.CACertKey]))
			cert, err := pki.ParseCert(s.Data[pki.CertKey])
			g.Expect(err).NotTo(HaveOccurred())
			for _, name := range []string{pod, pod + ".db-pods." + ns + ".svc", "db-leader." + ns + ".svc", "db-followers"} {
				_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
				g.Expect(err).NotTo(HaveOccurred(), "%s's certificate for %s", pod, name)
			}
		}
		rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(rs.Status.Certificates).NotTo(BeNil())
		g.Expect(rs.Status.Certificates.ExpiresAt.Time).To(BeTemporally("~", time.Now().Add(90*24*time.Hour), time.Hour))
		g.Expect(rs.Status.Certificates.CAExpiresAt.After(rs.Status.Certificates.ExpiresAt.Time)).To(BeTrue())
		// Each agent may read the pods' TLS Secrets and no other.
		role := get(t, g, ns, "db-agent", &rbacv1.Role{})
		g.Expect(role.Rules).To(ContainElement(HaveField("ResourceNames", ContainElement("db-0-tls"))))
		for _, rule := range role.Rules {
			g.Expect(rule.ResourceNames).NotTo(ContainElement("db-app"))
			g.Expect(rule.ResourceNames).NotTo(ContainElement("db-ca"))
		}
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// Once the pod has an address, its certificate names it too.
	g := NewWithT(t)
	g.Eventually(func(g Gomega) { get(t, g, ns, "db-0", &corev1.Pod{}) }).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	setPodReady(t, g, ns, "db-0", true)
	g.Eventually(func(g Gomega) {
		cert, err := pki.ParseCert(get(t, g, ns, "db-0-tls", &corev1.Secret{}).Data[pki.CertKey])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cert.IPAddresses).To(HaveLen(1))
		g.Expect(cert.IPAddresses[0].String()).To(Equal("192.0.2.1"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// Scaled down, a former member's key goes once its pod has.
	rs := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	g.Expect(update(t, rs, func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](2) })).To(Succeed())
	g.Eventually(func(g Gomega) {
		err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "db-2-tls"}, &corev1.Secret{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "db-2-tls: %v", err)
		get(t, g, ns, "db-1-tls", &corev1.Secret{})
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// A Secret of a member's certificate's name that is not the cluster's is
// never taken over: the cluster says so and waits.
func TestAForeignCertificateSecretIsRefused(t *testing.T) {
	ns := newNamespace(t)
	theirs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-1-tls"},
		Data: map[string][]byte{"tls.crt": []byte("theirs")}}
	NewWithT(t).Expect(k8s.Create(t.Context(), theirs)).To(Succeed())
	createReplicaSet(t, newReplicaSet(ns, "db"))
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		c := meta.FindStatusCondition(got.Status.Conditions, regentv1.ConditionDegraded)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(regentv1.ReasonNameTaken))
		g.Expect(c.Message).To(Equal("Secret db-1-tls exists and is not managed by this ReplicaSet: rename or delete it"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g := NewWithT(t)
	s := get(t, g, ns, "db-1-tls", &corev1.Secret{})
	g.Expect(s.OwnerReferences).To(BeEmpty())
	g.Expect(s.Data).To(Equal(map[string][]byte{"tls.crt": []byte("theirs")}))
}
