package controllers

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/pki"
)

// ownerReference makes rs the controller of a child, so that the child goes
// with it and its changes wake the reconciler.
func ownerReference(rs *regentv1.ReplicaSet) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(regentv1.GroupVersion.String()).
		WithKind("ReplicaSet").
		WithName(rs.Name).
		WithUID(rs.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

func labelSelector(labels map[string]string) *metav1ac.LabelSelectorApplyConfiguration {
	return metav1ac.LabelSelector().WithMatchLabels(labels)
}

// renderStatefulSet renders the StatefulSet of rs. claimSize is the size of
// the claim template: a StatefulSet's claim templates cannot change, so once
// it exists the caller passes the size it was created with, and grows the
// claims themselves.
func renderStatefulSet(rs *regentv1.ReplicaSet, images Images, claimSize resource.Quantity, stores storeMounts) *appsv1ac.StatefulSetApplyConfiguration {
	cluster := rs.Name
	claim := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: claimSize}))
	if rs.Spec.Storage.StorageClassName != nil {
		claim.WithStorageClassName(*rs.Spec.Storage.StorageClassName)
	}
	retention := appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if rs.PVCRetention() == regentv1.PVCDelete {
		retention = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	return appsv1ac.StatefulSet(names.StatefulSet(cluster), rs.Namespace).
		WithLabels(names.Labels(cluster)).
		WithOwnerReferences(ownerReference(rs)).
		WithSpec(appsv1ac.StatefulSetSpec().
			WithReplicas(rs.DesiredReplicas()).
			WithServiceName(names.PodsService(cluster)).
			WithSelector(labelSelector(names.SelectorLabels(cluster))).
			// Pods start together; their order is the operator's business
			// (the Lease), not the StatefulSet's.
			WithPodManagementPolicy(appsv1.ParallelPodManagement).
			// The operator orders restarts: followers first, then a
			// switchover, then the old leader.
			WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().WithType(appsv1.OnDeleteStatefulSetStrategyType)).
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(retention).
				// Scaling down keeps the claims: scaling up again finds
				// its data and needs no new base backup.
				WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
			WithTemplate(renderPodTemplate(rs, images, stores)).
			WithVolumeClaimTemplates(corev1ac.PersistentVolumeClaim(names.VolumeData, "").
				WithLabels(names.Labels(cluster)).
				WithSpec(claim)))
}

// renderServices renders the three Services of docs/architecture.md. The leader
// Service selects the leader of the current epoch only.
func renderServices(rs *regentv1.ReplicaSet, epoch int64) []*corev1ac.ServiceApplyConfiguration {
	cluster := rs.Name
	port := func(name string, number int32) *corev1ac.ServicePortApplyConfiguration {
		return corev1ac.ServicePort().WithName(name).WithPort(number).
			WithTargetPort(intstr.FromString(name)).WithProtocol(corev1.ProtocolTCP)
	}
	service := func(name string) *corev1ac.ServiceApplyConfiguration {
		return corev1ac.Service(name, rs.Namespace).
			WithLabels(names.Labels(cluster)).
			WithOwnerReferences(ownerReference(rs))
	}
	return []*corev1ac.ServiceApplyConfiguration{
		service(names.PodsService(cluster)).WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			// Peers must find each other before they are ready: a follower
			// is not ready until it streams from the leader.
			WithPublishNotReadyAddresses(true).
			WithSelector(names.SelectorLabels(cluster)).
			WithPorts(
				port(names.PortNamePostgres, names.PortPostgres),
				port(names.PortNameRelay, names.PortRelay),
				port(names.PortNameAgentHTTP, names.PortAgentHTTP),
			)),
		service(names.LeaderService(cluster)).WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(names.LeaderSelector(cluster, epoch)).
			WithPorts(port(names.PortNamePostgres, names.PortPostgres))),
		service(names.FollowersService(cluster)).WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(names.FollowerSelector(cluster)).
			WithPorts(port(names.PortNamePostgres, names.PortPostgres))),
	}
}

// renderPodDisruptionBudget lets voluntary disruptions take one pod at a
// time.
func renderPodDisruptionBudget(rs *regentv1.ReplicaSet) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(names.PodDisruptionBudget(rs.Name), rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(labelSelector(names.SelectorLabels(rs.Name))))
}

func renderServiceAccount(rs *regentv1.ReplicaSet) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(names.Agent(rs.Name), rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		// The pod projects the token into the agent container itself.
		WithAutomountServiceAccountToken(false)
}

// renderRole grants the agent what docs/architecture.md says it does and nothing
// more: read the pods of its cluster and renew (never create or delete) the
// cluster's Lease. Both are scoped by name: the agent lists and watches
// them with a metadata.name field selector, which RBAC authorizes per name.
// The pod names cover every ordinal the API allows, so scaling never has
// to wait for a Role update.
func renderRole(rs *regentv1.ReplicaSet) *rbacv1ac.RoleApplyConfiguration {
	return rbacv1ac.Role(names.Agent(rs.Name), rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		WithRules(
			rbacv1ac.PolicyRule().
				WithAPIGroups(corev1.GroupName).
				WithResources("pods").
				WithResourceNames(names.AllPods(rs.Name)...).
				WithVerbs("get", "list", "watch"),
			// The StatefulSet's replicas say who is a member: the
			// leader drops the slots of the others.
			rbacv1ac.PolicyRule().
				WithAPIGroups(appsv1.GroupName).
				WithResources("statefulsets").
				WithResourceNames(names.StatefulSet(rs.Name)).
				WithVerbs("get"),
			// Each pod reads its own key and certificate (Secret
			// <pod>-tls) and follows their renewal; the leader applies
			// the declared roles and databases (<cluster>-managed).
			rbacv1ac.PolicyRule().
				WithAPIGroups(corev1.GroupName).
				WithResources("secrets").
				WithResourceNames(append(names.AllPodTLSSecrets(rs.Name), names.ManagedSecret(rs.Name))...).
				WithVerbs("get", "list", "watch"),
			rbacv1ac.PolicyRule().
				WithAPIGroups(coordinationv1.GroupName).
				WithResources("leases").
				WithResourceNames(names.Lease(rs.Name)).
				WithVerbs("get", "list", "watch", "update", "patch"),
		)
}

func renderRoleBinding(rs *regentv1.ReplicaSet) *rbacv1ac.RoleBindingApplyConfiguration {
	return rbacv1ac.RoleBinding(names.Agent(rs.Name), rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		WithRoleRef(rbacv1ac.RoleRef().
			WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(names.Agent(rs.Name))).
		WithSubjects(rbacv1ac.Subject().
			WithKind(rbacv1.ServiceAccountKind).WithName(names.Agent(rs.Name)).WithNamespace(rs.Namespace))
}

// credentials is one database role's login.
type credentials struct {
	secret   string
	username string
	password string
}

// renderSecret renders a basic-auth Secret for c. The app Secret also
// carries everything a client needs to connect, including a uri.
func renderSecret(rs *regentv1.ReplicaSet, c credentials, app bool, caPEM []byte) *corev1ac.SecretApplyConfiguration {
	data := map[string]string{
		corev1.BasicAuthUsernameKey: c.username,
		corev1.BasicAuthPasswordKey: c.password,
	}
	if app {
		host := names.LeaderService(rs.Name) + "." + rs.Namespace + ".svc"
		port := strconv.Itoa(names.PortPostgres)
		db := rs.AppDatabase()
		data["user"] = c.username
		data["host"] = host
		data["port"] = port
		data["dbname"] = db
		// Remote clients connect only over TLS, and verify-full checks
		// the server's certificate against the cluster's CA (ca.crt here,
		// which the client names with sslrootcert or PGSSLROOTCERT).
		data["sslmode"] = "verify-full"
		data[pki.CACertKey] = string(caPEM)
		uri := url.URL{Scheme: "postgresql", User: url.UserPassword(c.username, c.password),
			Host: net.JoinHostPort(host, port), Path: "/" + db, RawQuery: "sslmode=verify-full"}
		data["uri"] = uri.String()
		jdbc := url.URL{Scheme: "postgresql", Host: net.JoinHostPort(host, port), Path: "/" + db,
			RawQuery: url.Values{"user": {c.username}, "password": {c.password}, "sslmode": {"verify-full"}}.Encode()}
		data["jdbc-uri"] = "jdbc:" + jdbc.String()
		data["pgpass"] = strings.Join([]string{host, port, db, pgpassEscape(c.username), pgpassEscape(c.password)}, ":") + "\n"
	}
	bytes := make(map[string][]byte, len(data))
	for k, v := range data {
		bytes[k] = []byte(v)
	}
	// data, not stringData: stringData is write-only, so server-side apply
	// could never see that nothing changed.
	secret := corev1ac.Secret(c.secret, rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithType(corev1.SecretTypeBasicAuth).
		WithData(bytes)
	if !keptWithTheData(rs) {
		secret.WithOwnerReferences(ownerReference(rs))
	}
	return secret
}

// keptWithTheData says whether the objects that belong with the data
// volumes outlive the ReplicaSet as the volumes do (pvcRetentionPolicy
// Retain): the credential Secrets, whose passwords the data holds, and the
// Lease, which says who led last and at which epoch. A ReplicaSet recreated
// under the same name adopts them and finds its cluster as it left it.
// With policy Delete they are children like the others and go with it.
func keptWithTheData(rs *regentv1.ReplicaSet) bool {
	return rs.PVCRetention() == regentv1.PVCRetain
}

// pgpassEscape escapes a .pgpass field (backslash and colon).
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}
