package controllers

import (
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
)

// installLeasePolicy creates config/policy's admission policy and binding
// once, and waits until the API server enforces it.
func installLeasePolicy(t *testing.T) {
	t.Helper()
	f, err := os.Open("../config/policy/agent-lease-rights.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	policy, binding := &admissionregistrationv1.ValidatingAdmissionPolicy{}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	if err := dec.Decode(policy); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(binding); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(t.Context(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// agentClient is a client with the token the kubelet would project into
// pod's agent container: the ServiceAccount <cluster>-agent, bound to the
// pod ("" binds it to nothing).
func agentClient(t *testing.T, ns, pod string) client.Client {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if pod != "" {
		p := &corev1.Pod{}
		NewWithT(t).Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pod}, p)).To(Succeed())
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: p.UID}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names.Agent("db")}}
	NewWithT(t).Expect(k8s.SubResource("token").Create(t.Context(), sa, req)).To(Succeed())
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = req.Status.Token
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every pod of a cluster runs with one ServiceAccount, allowed by RBAC to
// update the Lease. The admission policy narrows that to what the protocol
// lets an agent do: the holder's agent renews or releases; nothing else,
// from any pod, moves leadership, seals or changes the standbys.
func TestAnAgentOnlyRenewsOrReleasesTheLeaseItsPodHolds(t *testing.T) {
	ns := newNamespace(t)
	installLeasePolicy(t)
	g := NewWithT(t)
	agent := names.Agent("db")
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: agent}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: agent}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"db-leader"},
			Verbs: []string{"get", "update", "patch"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: agent},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: agent},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: agent, Namespace: ns}}},
	} {
		g.Expect(k8s.Create(t.Context(), obj)).To(Succeed())
	}
	for _, pod := range []string{"db-0", "db-1"} {
		g.Expect(k8s.Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod},
			Spec: corev1.PodSpec{ServiceAccountName: agent, Containers: []corev1.Container{{Name: "agent", Image: "regent:test"}}}})).To(Succeed())
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-leader", Labels: names.Labels("db")},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](10)}}
	leadership.Encode(leadership.State{Holder: "db-0", Epoch: 39, SealedEpoch: 38,
		Standbys: leadership.AnyOf(1, []string{"db-1", "db-2"})}, lease)
	g.Expect(k8s.Create(t.Context(), lease)).To(Succeed())
	leader, follower, unbound := agentClient(t, ns, "db-0"), agentClient(t, ns, "db-1"), agentClient(t, ns, "")

	// change applies f to the Lease as c, and returns the API server's answer.
	change := func(c client.Client, f func(*coordinationv1.Lease, *leadership.State), opts ...client.UpdateOption) error {
		l := &coordinationv1.Lease{}
		if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(lease), l); err != nil {
			return err
		}
		s := leadership.Of(l)
		f(l, &s)
		leadership.Encode(s, l)
		return c.Update(t.Context(), l, opts...)
	}
	renew := func(l *coordinationv1.Lease, _ *leadership.State) {
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
	}

	// The policy takes a moment to be enforced after its creation: probe
	// with a dry run, which admission sees and nothing keeps.
	NewWithT(t).Eventually(func() error {
		return change(follower, func(_ *coordinationv1.Lease, s *leadership.State) { s.Holder = "db-1" }, client.DryRunAll)
	}).WithTimeout(timeout).WithPolling(poll).Should(MatchError(ContainSubstring("only the holder's agent writes the Lease: db-1 does not hold it")))

	for _, tc := range []struct {
		name string
		as   client.Client
		f    func(*coordinationv1.Lease, *leadership.State)
		want string // "" allowed
	}{
		{"a follower takes the Lease at the same epoch", follower,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Holder = "db-1" }, "db-1 does not hold it"},
		{"a follower lifts the seal", follower,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.SealedEpoch = 0 }, "db-1 does not hold it"},
		{"a follower renews", follower, renew, "db-1 does not hold it"},
		{"a token bound to no pod", unbound, renew, "only with a token bound to its pod"},
		{"the leader blanks its standbys", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Standbys = leadership.Standbys{} }, "the operator's to set"},
		{"the leader seals its own epoch away", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.SealedEpoch = 0 }, "the operator's to set"},
		{"the leader hands the Lease to a follower", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Holder = "db-1" }, "never hand it to another pod"},
		{"the leader moves the epoch", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Epoch = 40 }, "only through the operator"},
		{"the leader lengthens its lease", leader,
			func(l *coordinationv1.Lease, _ *leadership.State) { l.Spec.LeaseDurationSeconds = ptr.To[int32](3600) }, "only through the operator"},
		{"the leader releases in a follower's name", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Holder, s.ReleasedBy = "", "db-1" }, "in its own name"},
		{"the leader renews", leader, renew, ""},
		{"the leader releases", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) {
				s.Holder, s.ReleasedBy, s.ReleasedLSN = "", "db-0", lsn.LSN(0x3000060)
			}, ""},
		{"the released leader takes the Lease back", leader,
			func(_ *coordinationv1.Lease, s *leadership.State) { s.Holder = "db-0" }, "db-0 does not hold it"},
		{"the operator elects", k8s,
			func(_ *coordinationv1.Lease, s *leadership.State) {
				s.Holder, s.Epoch, s.ReleasedBy, s.ReleasedLSN = "db-1", 40, "", 0
			}, ""},
	} {
		err := change(tc.as, tc.f)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: answered %v, want a refusal saying %q", tc.name, err, tc.want)
		}
	}
	// After all that, db-1 leads epoch 40 by the operator's election alone.
	got := leadership.Of(get(t, g, ns, "db-leader", &coordinationv1.Lease{}))
	g.Expect(got.Holder).To(Equal("db-1"))
	g.Expect(got.Epoch).To(BeEquivalentTo(40))
	g.Expect(got.SealedEpoch).To(BeEquivalentTo(38))
}
