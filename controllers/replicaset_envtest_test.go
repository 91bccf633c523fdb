package controllers

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/testenv"
)

const (
	timeout = 30 * time.Second
	poll    = 100 * time.Millisecond
)

func newReplicaSet(ns, name string, mutate ...func(*regentv1.ReplicaSet)) *regentv1.ReplicaSet {
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, m := range mutate {
		m(rs)
	}
	return rs
}

func createReplicaSet(t *testing.T, rs *regentv1.ReplicaSet) *regentv1.ReplicaSet {
	t.Helper()
	if err := k8s.Create(t.Context(), rs); err != nil {
		t.Fatalf("create ReplicaSet: %v", err)
	}
	return rs
}

func get[T client.Object](t *testing.T, g Gomega, ns, name string, obj T) T {
	t.Helper()
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj)).To(Succeed())
	return obj
}

// update re-reads the object named like obj, applies mutate and writes
// it back, retrying on conflicts: the operator patches status, labels and
// the Lease concurrently, as it would in a real cluster.
func update[T client.Object](t *testing.T, obj T, mutate func(T)) error {
	t.Helper()
	key := client.ObjectKeyFromObject(obj)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(t.Context(), key, obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(t.Context(), obj)
	})
}

// waitReconciled waits until the operator has fully reconciled rs's spec.
func waitReconciled(t *testing.T, rs *regentv1.ReplicaSet) *regentv1.ReplicaSet {
	t.Helper()
	out := &regentv1.ReplicaSet{}
	NewWithT(t).Eventually(func(g Gomega) {
		get(t, g, rs.Namespace, rs.Name, out)
		g.Expect(out.Status.ObservedGeneration).To(Equal(out.Generation))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	return out
}

func expectControlledBy(g Gomega, obj client.Object, rs *regentv1.ReplicaSet) {
	owner := metav1.GetControllerOf(obj)
	g.Expect(owner).NotTo(BeNil(), "%T %s has no controller", obj, obj.GetName())
	g.Expect(owner.Kind).To(Equal("ReplicaSet"))
	g.Expect(owner.APIVersion).To(Equal(regentv1.GroupVersion.String()))
	g.Expect(owner.UID).To(Equal(rs.UID))
	g.Expect(ptr.Deref(owner.BlockOwnerDeletion, false)).To(BeTrue())
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue(names.LabelCluster, rs.Name))
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue(names.LabelManagedBy, names.ManagedBy))
}

// expectKeptWithTheData: obj belongs to rs's cluster by its labels but has
// no owner, so that it outlives rs as the retained data volumes do.
func expectKeptWithTheData(g Gomega, obj client.Object, rs *regentv1.ReplicaSet) {
	g.Expect(obj.GetOwnerReferences()).To(BeEmpty(), "%T %s is kept with the data: no owner", obj, obj.GetName())
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue(names.LabelCluster, rs.Name))
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue(names.LabelManagedBy, names.ManagedBy))
}

func TestReplicaSetCreatesItsChildren(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Storage.Size = "2Gi"
		rs.Spec.Storage.StorageClassName = ptr.To("fast")
		rs.Spec.Postgres.Parameters = map[string]string{"max_connections": "200"}
		rs.Spec.Bootstrap.Database = "shop"
		rs.Spec.Bootstrap.Owner = "shopper"
	}))
	rs = waitReconciled(t, rs)
	g := NewWithT(t)

	// The API server applied the CRD's defaults.
	g.Expect(rs.Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	g.Expect(rs.Spec.Replication.Mode).To(Equal(regentv1.ReplicationAsync))
	g.Expect(rs.Spec.Failover.LeaseDurationSeconds).To(HaveValue(BeEquivalentTo(10)))
	g.Expect(rs.Spec.Failover.MaxLagBytes).To(HaveValue(BeEquivalentTo(1 << 20)))
	g.Expect(rs.Spec.Storage.PVCRetentionPolicy).To(Equal(regentv1.PVCRetain))

	t.Run("statefulset", func(t *testing.T) {
		g := NewWithT(t)
		sts := get(t, g, ns, "db", &appsv1.StatefulSet{})
		expectControlledBy(g, sts, rs)
		g.Expect(sts.Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
		g.Expect(sts.Spec.ServiceName).To(Equal("db-pods"))
		g.Expect(sts.Spec.PodManagementPolicy).To(Equal(appsv1.ParallelPodManagement))
		g.Expect(sts.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteStatefulSetStrategyType))
		g.Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
		g.Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
		g.Expect(sts.Spec.Selector.MatchLabels).To(Equal(names.SelectorLabels("db")))
		g.Expect(sts.Spec.VolumeClaimTemplates).To(HaveLen(1))
		vct := sts.Spec.VolumeClaimTemplates[0]
		g.Expect(vct.Name).To(Equal("pgdata"))
		g.Expect(vct.Spec.Resources.Requests.Storage().String()).To(Equal("2Gi"))
		g.Expect(vct.Spec.StorageClassName).To(HaveValue(Equal("fast")))

		pod := sts.Spec.Template
		g.Expect(pod.Labels).To(Equal(names.Labels("db")))
		g.Expect(pod.Spec.ServiceAccountName).To(Equal("db-agent"))
		g.Expect(pod.Spec.AutomountServiceAccountToken).To(HaveValue(BeFalse()))
		g.Expect(pod.Spec.InitContainers).To(HaveLen(1))
		g.Expect(pod.Spec.InitContainers[0].Command).To(Equal([]string{"/usr/local/bin/regent", "install", "/regent/bin"}))
		g.Expect(pod.Spec.InitContainers[0].Image).To(Equal("regent:test"))
		g.Expect(pod.Spec.Containers).To(HaveLen(2))
		pg, agent := pod.Spec.Containers[0], pod.Spec.Containers[1]
		g.Expect(pg.Name).To(Equal("postgres"))
		g.Expect(pg.Image).To(Equal("postgres:15"))
		g.Expect(pg.Command).To(Equal([]string{"/regent/bin/regent", "instance"}))
		g.Expect(agent.Name).To(Equal("agent"))
		g.Expect(agent.Command).To(Equal([]string{"/usr/local/bin/regent", "agent"}))
		g.Expect(agent.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		g.Expect(agent.ReadinessProbe.HTTPGet.Port.String()).To(Equal(names.PortNameAgentHTTP))
	})

	t.Run("services", func(t *testing.T) {
		g := NewWithT(t)
		pods := get(t, g, ns, "db-pods", &corev1.Service{})
		expectControlledBy(g, pods, rs)
		g.Expect(pods.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
		g.Expect(pods.Spec.PublishNotReadyAddresses).To(BeTrue())
		g.Expect(pods.Spec.Selector).To(Equal(names.SelectorLabels("db")))

		leader := get(t, g, ns, "db-leader", &corev1.Service{})
		expectControlledBy(g, leader, rs)
		g.Expect(leader.Spec.Selector).To(Equal(map[string]string{
			names.LabelName: "postgres", names.LabelCluster: "db",
			names.LabelRole: "leader", names.LabelEpoch: "1",
		}))
		g.Expect(leader.Spec.Ports).To(ConsistOf(HaveField("Port", BeEquivalentTo(5432))))

		followers := get(t, g, ns, "db-followers", &corev1.Service{})
		expectControlledBy(g, followers, rs)
		g.Expect(followers.Spec.Selector).To(Equal(map[string]string{
			names.LabelName: "postgres", names.LabelCluster: "db", names.LabelRole: "follower",
		}))
	})

	t.Run("agent rbac", func(t *testing.T) {
		g := NewWithT(t)
		sa := get(t, g, ns, "db-agent", &corev1.ServiceAccount{})
		expectControlledBy(g, sa, rs)
		role := get(t, g, ns, "db-agent", &rbacv1.Role{})
		expectControlledBy(g, role, rs)
		g.Expect(role.Rules).To(ConsistOf(
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"},
				ResourceNames: names.AllPods("db"), Verbs: []string{"get", "list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"statefulsets"},
				ResourceNames: []string{"db"}, Verbs: []string{"get"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"},
				ResourceNames: append(names.AllPodTLSSecrets("db"), "db-managed"), Verbs: []string{"get", "list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
				ResourceNames: []string{"db-leader"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		))
		rb := get(t, g, ns, "db-agent", &rbacv1.RoleBinding{})
		expectControlledBy(g, rb, rs)
		g.Expect(rb.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "db-agent"}))
		g.Expect(rb.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Name: "db-agent", Namespace: ns}}))
	})

	t.Run("the agent's own permissions", func(t *testing.T) {
		// Ask the API server what the agent's ServiceAccount may do:
		// RBAC, not our reading of the Role, is what counts.
		user := "system:serviceaccount:" + ns + ":db-agent"
		allowed := func(verb, group, resource, name string) bool {
			return canI(t, user, ns, verb, group, resource, name)
		}
		g := NewWithT(t)
		g.Expect(allowed("get", "", "pods", "db-0")).To(BeTrue())
		g.Expect(allowed("watch", "", "pods", "db-8")).To(BeTrue())
		g.Expect(allowed("patch", "", "pods", "db-0")).To(BeFalse(), "the agent never writes labels")
		g.Expect(allowed("get", "", "pods", "other-0")).To(BeFalse())
		g.Expect(allowed("list", "", "pods", "")).To(BeFalse(), "listing every pod of the namespace")
		g.Expect(allowed("update", "coordination.k8s.io", "leases", "db-leader")).To(BeTrue())
		g.Expect(allowed("update", "coordination.k8s.io", "leases", "other-leader")).To(BeFalse())
		g.Expect(allowed("delete", "coordination.k8s.io", "leases", "db-leader")).To(BeFalse())
		g.Expect(allowed("watch", "", "secrets", "db-1-tls")).To(BeTrue())
		for _, secret := range []string{"db-app", "db-superuser", "db-replication", "db-ca"} {
			g.Expect(allowed("get", "", "secrets", secret)).To(BeFalse(), "the agent reads "+secret)
		}
		g.Expect(allowed("create", "coordination.k8s.io", "leases", "")).To(BeFalse())
		g.Expect(allowed("get", "", "secrets", "db-superuser")).To(BeFalse())
		g.Expect(allowed("get", "regent.dev", "replicasets", "db")).To(BeFalse(), "the agent never reads or writes the ReplicaSet")
	})

	t.Run("pod disruption budget", func(t *testing.T) {
		g := NewWithT(t)
		pdb := get(t, g, ns, "db", &policyv1.PodDisruptionBudget{})
		expectControlledBy(g, pdb, rs)
		g.Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
		g.Expect(pdb.Spec.Selector.MatchLabels).To(Equal(names.SelectorLabels("db")))
	})

	t.Run("lease", func(t *testing.T) {
		g := NewWithT(t)
		lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
		expectKeptWithTheData(g, lease, rs)
		g.Expect(lease.Spec.HolderIdentity).To(HaveValue(Equal("db-0")))
		g.Expect(lease.Spec.LeaseTransitions).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(lease.Spec.LeaseDurationSeconds).To(HaveValue(BeEquivalentTo(10)))
		g.Expect(lease.Spec.RenewTime).To(BeNil(), "nobody renewed the Lease of a new cluster yet")
	})

	t.Run("secrets", func(t *testing.T) {
		g := NewWithT(t)
		for name, user := range map[string]string{"db-superuser": "postgres", "db-replication": "regent_replication", "db-app": "shopper"} {
			s := get(t, g, ns, name, &corev1.Secret{})
			expectKeptWithTheData(g, s, rs)
			g.Expect(s.Type).To(Equal(corev1.SecretTypeBasicAuth))
			g.Expect(string(s.Data["username"])).To(Equal(user))
			g.Expect(s.Data["password"]).To(HaveLen(32))
		}
		app := get(t, g, ns, "db-app", &corev1.Secret{})
		uri, err := url.Parse(string(app.Data["uri"]))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(uri.Scheme).To(Equal("postgresql"))
		g.Expect(uri.Host).To(Equal("db-leader." + ns + ".svc:5432"))
		g.Expect(uri.Path).To(Equal("/shop"))
		g.Expect(uri.User.Username()).To(Equal("shopper"))
		password, _ := uri.User.Password()
		g.Expect(password).To(Equal(string(app.Data["password"])))
		g.Expect(string(app.Data["dbname"])).To(Equal("shop"))
		g.Expect(string(app.Data["host"])).To(Equal("db-leader." + ns + ".svc"))
		g.Expect(string(app.Data["port"])).To(Equal("5432"))
	})
}

// canI asks the API server whether user may do verb on resource.
func canI(t *testing.T, user, ns, verb, group, resource, name string) bool {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{}
	review.Spec.User = user
	review.Spec.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	review.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{
		Namespace: ns, Verb: verb, Group: group, Resource: resource, Name: name,
	}
	if err := k8s.Create(t.Context(), review); err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return review.Status.Allowed
}

// resourceVersions snapshots the resourceVersion of every child of rs.
func resourceVersions(t *testing.T, g Gomega, rs *regentv1.ReplicaSet) map[string]string {
	t.Helper()
	ns := rs.Namespace
	objs := map[string]client.Object{
		"ReplicaSet/db":           &regentv1.ReplicaSet{},
		"StatefulSet/db":          &appsv1.StatefulSet{},
		"Service/db-pods":         &corev1.Service{},
		"Service/db-leader":       &corev1.Service{},
		"Service/db-followers":    &corev1.Service{},
		"Secret/db-superuser":     &corev1.Secret{},
		"Secret/db-replication":   &corev1.Secret{},
		"Secret/db-app":           &corev1.Secret{},
		"ServiceAccount/db-agent": &corev1.ServiceAccount{},
		"Role/db-agent":           &rbacv1.Role{},
		"RoleBinding/db-agent":    &rbacv1.RoleBinding{},
		"PodDisruptionBudget/db":  &policyv1.PodDisruptionBudget{},
		"Lease/db-leader":         &coordinationv1.Lease{},
	}
	out := map[string]string{}
	for key, obj := range objs {
		_, name, _ := strings.Cut(key, "/")
		get(t, g, ns, name, obj)
		out[key] = obj.GetResourceVersion()
	}
	return out
}

func TestSecondReconcileChangesNothing(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replicas = ptr.To[int32](2)
	}))
	waitReconciled(t, rs)
	// Let the StatefulSet controller finish creating pods and reporting,
	// and the operator react to that, so that only our writes could move
	// a resourceVersion below.
	NewWithT(t).Eventually(func(g Gomega) {
		sts := get(t, g, ns, "db", &appsv1.StatefulSet{})
		g.Expect(sts.Status.ObservedGeneration).To(Equal(sts.Generation))
		g.Expect(sts.Status.Replicas).To(BeEquivalentTo(2))
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Replicas).To(BeEquivalentTo(2))
		g.Expect(got.Status.Members).To(ContainElement(HaveField("Role", regentv1.RoleLeader)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	g := NewWithT(t)
	before := resourceVersions(t, g, rs)
	secretBefore := get(t, g, ns, "db-superuser", &corev1.Secret{})

	// Reconcile by hand, twice, with a reconciler of our own: the manager's
	// may run too, and would also have to write nothing.
	r := &ReplicaSetReconciler{Client: k8s, APIReader: k8s, Recorder: discardRecorder{}, Images: testImage, Agents: hollow}
	for range 2 {
		res, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "db"}})
		g.Expect(err).NotTo(HaveOccurred())
		// A healthy cluster is looked at again on a modest period.
		g.Expect(res.RequeueAfter).To(BeNumerically("<=", healthyPeriod))
	}
	g.Expect(resourceVersions(t, g, rs)).To(Equal(before), "a reconcile of an unchanged cluster wrote something")
	secretAfter := get(t, g, ns, "db-superuser", &corev1.Secret{})
	g.Expect(secretAfter.Data["password"]).To(Equal(secretBefore.Data["password"]))
}

func TestPasswordsAreNeverRegenerated(t *testing.T) {
	ns := newNamespace(t)
	// A Secret of the app's name that is not labelled for the cluster is
	// someone else's: refused, untouched.
	mine := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-app"},
		Data:       map[string][]byte{"password": []byte("chosen:by/user")},
	}
	NewWithT(t).Expect(k8s.Create(t.Context(), mine)).To(Succeed())
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Storage.PVCRetentionPolicy = regentv1.PVCDelete
	}))
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		c := meta.FindStatusCondition(got.Status.Conditions, regentv1.ConditionDegraded)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(regentv1.ReasonNameTaken))
		g.Expect(c.Message).To(Equal("Secret db-app exists and is not managed by this ReplicaSet: " +
			"label it regent.dev/cluster=db for this cluster to use the password it holds, or rename or delete it"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g := NewWithT(t)
	theirs := get(t, g, ns, "db-app", &corev1.Secret{})
	g.Expect(theirs.OwnerReferences).To(BeEmpty(), "the operator took over a Secret it did not create")
	g.Expect(theirs.Data).To(Equal(map[string][]byte{"password": []byte("chosen:by/user")}))

	// Labelled for the cluster, it keeps the user's password.
	g.Expect(update(t, theirs, func(s *corev1.Secret) {
		s.Labels = map[string]string{names.LabelCluster: "db"}
	})).To(Succeed())
	waitReconciled(t, rs)
	app := get(t, g, ns, "db-app", &corev1.Secret{})
	g.Expect(string(app.Data["password"])).To(Equal("chosen:by/user"))
	uri, err := url.Parse(string(app.Data["uri"]))
	g.Expect(err).NotTo(HaveOccurred())
	password, _ := uri.User.Password()
	g.Expect(password).To(Equal("chosen:by/user"), "the uri must carry the password, escaped")

	// A spec change makes the operator re-apply every child: the
	// generated passwords stay.
	super := get(t, g, ns, "db-superuser", &corev1.Secret{})
	got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	g.Expect(update(t, got, func(rs *regentv1.ReplicaSet) { rs.Spec.Replicas = ptr.To[int32](4) })).To(Succeed())
	waitReconciled(t, got)
	g.Expect(get(t, g, ns, "db-superuser", &corev1.Secret{}).Data["password"]).To(Equal(super.Data["password"]))

	// A password a person changes in the Secret is the one kept: the
	// operator reads its own Secrets from its cache, and a cache behind the
	// change must never write the old password back.
	super = get(t, g, ns, "db-superuser", &corev1.Secret{})
	g.Expect(update(t, super, func(s *corev1.Secret) { s.Data["password"] = []byte("rotated-by-a-person") })).To(Succeed())
	for i := range 5 {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(update(t, got, func(rs *regentv1.ReplicaSet) {
			rs.Annotations = map[string]string{"test/pass": strconv.Itoa(i)}
		})).To(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(string(get(t, g, ns, "db-superuser", &corev1.Secret{}).Data["password"])).To(Equal("rotated-by-a-person"))
		}).WithTimeout(500 * time.Millisecond).WithPolling(50 * time.Millisecond).Should(Succeed())
	}
}

// setPodReady sets a pod's Ready condition, as a kubelet would, after
// binding it to the test node, as a scheduler would.
func setPodReady(t *testing.T, g Gomega, ns, name string, ready bool) {
	t.Helper()
	pod := get(t, g, ns, name, &corev1.Pod{})
	if pod.Spec.NodeName == "" {
		binding := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Target:     corev1.ObjectReference{Kind: "Node", Name: testenv.NodeName},
		}
		g.Expect(k8s.SubResource("binding").Create(t.Context(), pod, binding)).To(Succeed())
		pod = get(t, g, ns, name, &corev1.Pod{})
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Phase = corev1.PodRunning
	// The EndpointSlice controller needs a pod IP. The API server refuses
	// loopback addresses in EndpointSlices, so this is an address of the
	// documentation range (RFC 5737): inert data, nothing connects to it.
	ordinal, _ := names.Ordinal("db", name)
	pod.Status.PodIP = fmt.Sprintf("192.0.2.%d", ordinal+1)
	pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()},
		{Type: corev1.ContainersReady, Status: status, LastTransitionTime: metav1.Now()},
	}
	// The operator labels pods meanwhile: on a conflict, read the pod
	// again and set the same status on it.
	want := pod.Status
	g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := k8s.Status().Update(t.Context(), pod)
		if apierrors.IsConflict(err) {
			pod = get(t, g, ns, name, &corev1.Pod{})
			pod.Status = want
		}
		return err
	})).To(Succeed())
}

func TestStatusFollowsPodsAndLease(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db"))
	rs = waitReconciled(t, rs)
	g := NewWithT(t)
	g.Expect(rs.Status.Selector).To(Equal("app.kubernetes.io/name=postgres,regent.dev/cluster=db"))
	g.Expect(rs.Status.Epoch).To(BeEquivalentTo(1))
	g.Expect(rs.Status.Leader).To(Equal("db-0"))

	// The StatefulSet controller creates the pods; the operator labels the
	// Lease holder leader of epoch 1 at once, but nothing is ready.
	NewWithT(t).Eventually(func(g Gomega) {
		pod := get(t, g, ns, "db-0", &corev1.Pod{})
		g.Expect(pod.Labels).To(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
		g.Expect(pod.Labels).To(HaveKeyWithValue(names.LabelEpoch, "1"))
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Replicas).To(BeEquivalentTo(3))
		g.Expect(got.Status.Ready).To(Equal("0/3"))
		g.Expect(got.Status.Phase).To(Equal(regentv1.PhaseCreating))
		expectCondition(g, got, regentv1.ConditionAvailable, metav1.ConditionFalse, regentv1.ReasonLeaderNotReady)
		expectCondition(g, got, regentv1.ConditionProgressing, metav1.ConditionTrue, regentv1.ReasonCreating)
		expectCondition(g, got, regentv1.ConditionFailingOver, metav1.ConditionFalse, regentv1.ReasonIdle)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	for _, pod := range []string{"db-1", "db-2"} {
		g.Expect(get(t, g, ns, pod, &corev1.Pod{}).Labels).NotTo(HaveKey(names.LabelRole),
			"a pod whose role is not confirmed has no role label")
	}

	// All pods ready: the leader serves, the others are confirmed followers.
	for _, pod := range []string{"db-0", "db-1", "db-2"} {
		setPodReady(t, g, ns, pod, true)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Ready).To(Equal("3/3"))
		g.Expect(got.Status.ReadyReplicas).To(BeEquivalentTo(3))
		g.Expect(got.Status.Phase).To(Equal(regentv1.PhaseHealthy))
		g.Expect(got.Status.Members).To(Equal([]regentv1.MemberStatus{
			{Name: "db-0", Role: regentv1.RoleLeader, Ready: true},
			// No agent runs in these pods: the operator says so.
			{Name: "db-1", Role: regentv1.RoleFollower, Ready: true, Eligible: ptr.To(false), Reason: "its agent does not answer"},
			{Name: "db-2", Role: regentv1.RoleFollower, Ready: true, Eligible: ptr.To(false), Reason: "its agent does not answer"},
		}))
		expectCondition(g, got, regentv1.ConditionAvailable, metav1.ConditionTrue, regentv1.ReasonLeaderReady)
		expectCondition(g, got, regentv1.ConditionProgressing, metav1.ConditionFalse, regentv1.ReasonReconciled)
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionFalse, regentv1.ReasonAllReplicasReady)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// The Services' endpoints follow the labels (the EndpointSlice
	// controller of kube-controller-manager is real here).
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(endpointPods(t, g, ns, "db-leader")).To(ConsistOf("db-0"))
		g.Expect(endpointPods(t, g, ns, "db-followers")).To(ConsistOf("db-1", "db-2"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// A follower fails: the cluster still serves, degraded.
	setPodReady(t, g, ns, "db-2", false)
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.Ready).To(Equal("2/3"))
		g.Expect(got.Status.Phase).To(Equal(regentv1.PhaseDegraded))
		expectCondition(g, got, regentv1.ConditionAvailable, metav1.ConditionTrue, regentv1.ReasonLeaderReady)
		expectCondition(g, got, regentv1.ConditionDegraded, metav1.ConditionTrue, regentv1.ReasonFollowersNotReady)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// endpointPods returns the names of the pods behind a Service.
func endpointPods(t *testing.T, g Gomega, ns, service string) []string {
	t.Helper()
	list := &discoveryv1.EndpointSliceList{}
	g.Expect(k8s.List(t.Context(), list, client.InNamespace(ns),
		client.MatchingLabels{"kubernetes.io/service-name": service})).To(Succeed())
	var pods []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil {
				pods = append(pods, e.TargetRef.Name)
			}
		}
	}
	return pods
}

func expectCondition(g Gomega, rs *regentv1.ReplicaSet, typ string, status metav1.ConditionStatus, reason string) {
	c := meta.FindStatusCondition(rs.Status.Conditions, typ)
	g.Expect(c).NotTo(BeNil(), "condition %s missing", typ)
	g.Expect(c.Status).To(Equal(status), "condition %s: %s", typ, c.Message)
	g.Expect(c.Reason).To(Equal(reason), "condition %s: %s", typ, c.Message)
	g.Expect(c.ObservedGeneration).To(Equal(rs.Generation))
}

func TestLeaderLabelsFollowTheLease(t *testing.T) {
	ns := newNamespace(t)
	rs := createReplicaSet(t, newReplicaSet(ns, "db", func(rs *regentv1.ReplicaSet) {
		rs.Spec.Replicas = ptr.To[int32](2)
	}))
	waitReconciled(t, rs)
	g := NewWithT(t)
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(get(t, g, ns, "db-0", &corev1.Pod{}).Labels).To(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
		g.Expect(get(t, g, ns, "db-1", &corev1.Pod{}).Labels).To(HaveKey(names.LabelCluster))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// A second pod claiming leadership loses the claim: one leader only.
	pod := get(t, g, ns, "db-1", &corev1.Pod{})
	g.Expect(update(t, pod, func(pod *corev1.Pod) {
		pod.Labels[names.LabelRole] = names.RoleLeader
		pod.Labels[names.LabelEpoch] = "1"
	})).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		labels := get(t, g, ns, "db-1", &corev1.Pod{}).Labels
		g.Expect(labels).NotTo(HaveKey(names.LabelRole))
		g.Expect(labels).NotTo(HaveKey(names.LabelEpoch))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Expect(get(t, g, ns, "db-0", &corev1.Pod{}).Labels).To(HaveKeyWithValue(names.LabelRole, names.RoleLeader))

	// Seal epoch 1, as a failover's first phase does, and drop the
	// leader's label: the operator must not give a sealed epoch its leader
	// back (docs/protocol.md: a sealed epoch never serves again).
	lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
	g.Expect(update(t, lease, func(l *coordinationv1.Lease) {
		s := leadership.Of(l)
		s.SealedEpoch = 1
		leadership.Encode(s, l)
	})).To(Succeed())
	leader := get(t, g, ns, "db-0", &corev1.Pod{})
	g.Expect(update(t, leader, func(pod *corev1.Pod) {
		delete(pod.Labels, names.LabelRole)
		delete(pod.Labels, names.LabelEpoch)
	})).To(Succeed())
	// Any change to the ReplicaSet makes the operator look again.
	bump := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	g.Expect(update(t, bump, func(rs *regentv1.ReplicaSet) { rs.Spec.Failover.DelaySeconds = ptr.To[int32](1) })).To(Succeed())
	waitReconciled(t, bump)
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(get(t, g, ns, "db-0", &corev1.Pod{}).Labels).NotTo(HaveKey(names.LabelRole))
	}).WithTimeout(2 * time.Second).WithPolling(poll).Should(Succeed())
	got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
	expectCondition(g, got, regentv1.ConditionAvailable, metav1.ConditionFalse, regentv1.ReasonNoLeader)
}

// With pvcRetentionPolicy Retain, the data volumes outlive the ReplicaSet,
// and so do the Secrets (the data holds their passwords) and the Lease
// (who led last, at which epoch): a ReplicaSet recreated under the same
// name adopts them and goes on where the cluster was. With Delete, all go.
func TestDeletingTheReplicaSetKeepsItsVolumes(t *testing.T) {
	for _, tt := range []struct {
		policy   regentv1.PVCRetentionPolicy
		wantKept bool
	}{
		{regentv1.PVCRetain, true},
		// The opposite policy shows that the machinery can delete them, so
		// that the Retain case can fail.
		{regentv1.PVCDelete, false},
	} {
		t.Run(string(tt.policy), func(t *testing.T) {
			ns := newNamespace(t)
			spec := func(rs *regentv1.ReplicaSet) {
				rs.Spec.Replicas = ptr.To[int32](2)
				rs.Spec.Storage.PVCRetentionPolicy = tt.policy
			}
			rs := createReplicaSet(t, newReplicaSet(ns, "db", spec))
			waitReconciled(t, rs)
			claims := []string{names.PVC("db", 0), names.PVC("db", 1)}
			secrets := []string{names.SuperuserSecret("db"), names.ReplicationSecret("db"), names.AppSecret("db")}
			NewWithT(t).Eventually(func(g Gomega) {
				for _, c := range claims {
					get(t, g, ns, c, &corev1.PersistentVolumeClaim{})
				}
			}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
			passwords := map[string]string{}
			for _, name := range secrets {
				passwords[name] = string(get(t, NewWithT(t), ns, name, &corev1.Secret{}).Data[corev1.BasicAuthPasswordKey])
			}
			// The cluster has failed over a few times: db-1 leads epoch 4.
			lease := get(t, NewWithT(t), ns, "db-leader", &coordinationv1.Lease{})
			NewWithT(t).Expect(update(t, lease, func(l *coordinationv1.Lease) {
				l.Spec.HolderIdentity, l.Spec.LeaseTransitions = ptr.To("db-1"), ptr.To[int32](4)
			})).To(Succeed())

			g := NewWithT(t)
			g.Expect(k8s.Delete(t.Context(), get(t, g, ns, "db", &regentv1.ReplicaSet{}))).To(Succeed())
			// The garbage collector takes the children.
			NewWithT(t).Eventually(func(g Gomega) {
				for _, obj := range []client.Object{&appsv1.StatefulSet{}, &corev1.Service{}} {
					name := "db"
					if _, ok := obj.(*corev1.Service); ok {
						name = "db-leader"
					}
					err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj)
					g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%T %s still exists", obj, name)
				}
				g.Expect(podNames(t, g, ns)).To(BeEmpty())
			}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

			check := func(g Gomega) {
				kept := map[string]client.Object{"db-leader": &coordinationv1.Lease{}}
				for _, c := range claims {
					kept[c] = &corev1.PersistentVolumeClaim{}
				}
				for _, name := range secrets {
					kept[name] = &corev1.Secret{}
				}
				for name, obj := range kept {
					err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj)
					if tt.wantKept {
						g.Expect(err).NotTo(HaveOccurred(), "%T %s", obj, name)
						g.Expect(obj.GetDeletionTimestamp()).To(BeNil(), "%T %s is being deleted", obj, name)
					} else {
						g.Expect(apierrors.IsNotFound(err) || obj.GetDeletionTimestamp() != nil).To(BeTrue(),
							"%T %s survived policy Delete", obj, name)
					}
				}
			}
			if !tt.wantKept {
				NewWithT(t).Eventually(check).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
				return
			}
			NewWithT(t).Consistently(check).WithTimeout(3 * time.Second).WithPolling(poll).Should(Succeed())

			// Recreated under the same name, the cluster finds its
			// passwords and its leadership as they were.
			again := createReplicaSet(t, newReplicaSet(ns, "db", spec))
			waitReconciled(t, again)
			NewWithT(t).Eventually(func(g Gomega) {
				lease := get(t, g, ns, "db-leader", &coordinationv1.Lease{})
				g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("db-1"))
				g.Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(4))
				g.Expect(lease.OwnerReferences).To(BeEmpty())
				for _, name := range secrets {
					secret := get(t, g, ns, name, &corev1.Secret{})
					g.Expect(string(secret.Data[corev1.BasicAuthPasswordKey])).To(Equal(passwords[name]), "Secret %s", name)
					g.Expect(secret.OwnerReferences).To(BeEmpty(), "Secret %s", name)
				}
				labels := get(t, g, ns, "db-1", &corev1.Pod{}).Labels
				g.Expect(labels).To(HaveKeyWithValue(names.LabelRole, names.RoleLeader))
				g.Expect(labels).To(HaveKeyWithValue(names.LabelEpoch, "4"))
			}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
		})
	}
}

func podNames(t *testing.T, g Gomega, ns string) []string {
	t.Helper()
	list := &corev1.PodList{}
	g.Expect(k8s.List(t.Context(), list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, p := range list.Items {
		out = append(out, p.Name)
	}
	return out
}

func TestObjectsOfOthersAreNeverTakenOver(t *testing.T) {
	ns := newNamespace(t)
	g := NewWithT(t)
	theirs := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-leader"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "theirs"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}
	g.Expect(k8s.Create(t.Context(), theirs)).To(Succeed())
	createReplicaSet(t, newReplicaSet(ns, "db"))

	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		c := meta.FindStatusCondition(got.Status.Conditions, regentv1.ConditionDegraded)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(Equal(regentv1.ReasonNameTaken))
		g.Expect(c.Message).To(Equal("Service db-leader exists and is not managed by this ReplicaSet: rename or delete it"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	svc := get(t, g, ns, "db-leader", &corev1.Service{})
	g.Expect(svc.OwnerReferences).To(BeEmpty(), "the operator took over a Service it did not create")
	g.Expect(svc.Spec.Selector).To(Equal(map[string]string{"app": "theirs"}))

	// Once the name is free, the cluster comes together.
	g.Expect(k8s.Delete(t.Context(), svc)).To(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := get(t, g, ns, "db", &regentv1.ReplicaSet{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		leader := get(t, g, ns, "db-leader", &corev1.Service{})
		g.Expect(metav1.IsControlledBy(leader, got)).To(BeTrue())
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}
