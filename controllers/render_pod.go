package controllers

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// Images are the container images the operator runs. The postgres image
// comes from the ReplicaSet when it sets one.
type Images struct {
	// Regent is the image holding the regent binary (init container, agent).
	Regent string
	// Postgres is the default PostgreSQL image.
	Postgres string
	// PullPolicy applies to both; empty leaves Kubernetes' default.
	PullPolicy corev1.PullPolicy
}

// postgresImage is the PostgreSQL image the pods of rs run.
func (im Images) postgresImage(rs *regentv1.ReplicaSet) string {
	if rs.Spec.Postgres.Image != "" {
		return rs.Spec.Postgres.Image
	}
	return im.Postgres
}

// renderPodTemplate renders the pod of docs/architecture.md: a bootstrap init
// container copying the regent binary into the shared run directory, the
// postgres container running `regent instance` as PID 1, and the agent
// sidecar, which alone holds Kubernetes credentials.
func renderPodTemplate(rs *regentv1.ReplicaSet, images Images, stores storeMounts) *corev1ac.PodTemplateSpecApplyConfiguration {
	cluster := rs.Name
	spec := corev1ac.PodSpec().
		WithServiceAccountName(names.Agent(cluster)).
		// The token is projected into the agent only (volume sa-token):
		// instance and PostgreSQL never hold Kubernetes credentials.
		WithAutomountServiceAccountToken(false).
		// Service links add an env variable per Service of the namespace;
		// nothing here reads them.
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(30).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(names.PostgresUID).
			WithRunAsGroup(names.PostgresUID).
			WithFSGroup(names.PostgresUID).
			WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithInitContainers(renderBootstrapContainer(images)).
		WithContainers(renderPostgresContainer(rs, images, stores), renderAgentContainer(rs, images, stores)).
		WithVolumes(renderVolumes(cluster, stores)...)

	if rs.Spec.Affinity != nil {
		spec.WithAffinity(affinityApplyConfiguration(rs.Spec.Affinity))
	} else {
		spec.WithAffinity(defaultAffinity(cluster))
	}
	for i := range rs.Spec.TopologySpreadConstraints {
		spec.WithTopologySpreadConstraints(topologySpreadApplyConfiguration(&rs.Spec.TopologySpreadConstraints[i]))
	}

	return corev1ac.PodTemplateSpec().
		WithLabels(names.Labels(cluster)).
		WithSpec(spec)
}

// restrictedSecurityContext satisfies the restricted Pod Security Standard.
func restrictedSecurityContext() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithAllowPrivilegeEscalation(false).
		WithReadOnlyRootFilesystem(true).
		WithRunAsNonRoot(true).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
}

// podEnv is the downward API environment both long-running containers read.
func podEnv(cluster string) []*corev1ac.EnvVarApplyConfiguration {
	field := func(name, path string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath(path)))
	}
	return []*corev1ac.EnvVarApplyConfiguration{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		// Every listener binds POD_IP, never 0.0.0.0 (docs/architecture.md, rule 8).
		field("POD_IP", "status.podIP"),
		corev1ac.EnvVar().WithName("REGENT_CLUSTER").WithValue(cluster),
		corev1ac.EnvVar().WithName("PGDATA").WithValue(names.PGData),
		corev1ac.EnvVar().WithName("REGENT_RUN_DIR").WithValue(names.SocketDir),
	}
}

func renderBootstrapContainer(images Images) *corev1ac.ContainerApplyConfiguration {
	c := corev1ac.Container().
		WithName(names.ContainerBootstrap).
		WithImage(images.Regent).
		WithCommand(names.ImageBinaryPath, "install", names.BinDir).
		WithVolumeMounts(corev1ac.VolumeMount().WithName(names.VolumeRun).WithMountPath(names.RunDir)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")})).
		WithSecurityContext(restrictedSecurityContext())
	if images.PullPolicy != "" {
		c.WithImagePullPolicy(images.PullPolicy)
	}
	return c
}

func renderPostgresContainer(rs *regentv1.ReplicaSet, images Images, stores storeMounts) *corev1ac.ContainerApplyConfiguration {
	params := rs.Spec.Postgres.Parameters
	if params == nil {
		params = map[string]string{}
	}
	// Maps marshal with sorted keys: the same parameters always render the
	// same template.
	paramsJSON, _ := json.Marshal(params)
	c := corev1ac.Container().
		WithName(names.ContainerPostgres).
		WithImage(images.postgresImage(rs)).
		WithCommand(names.BinaryPath, "instance").
		WithEnv(podEnv(rs.Name)...).
		WithEnv(corev1ac.EnvVar().WithName(names.EnvPGParameters).WithValue(string(paramsJSON))).
		WithEnv(corev1ac.EnvVar().WithName(names.EnvStorageSize).WithValue(storageSize(rs))).
		WithEnv(stores.env()...).
		WithEnv(corev1ac.EnvVar().WithName(names.EnvClusterUID).WithValue(string(rs.UID))).
		WithPorts(corev1ac.ContainerPort().WithName(names.PortNamePostgres).
			WithContainerPort(names.PortPostgres).WithProtocol(corev1.ProtocolTCP)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(names.VolumeData).WithMountPath(names.DataMountPath),
			corev1ac.VolumeMount().WithName(names.VolumeRun).WithMountPath(names.RunDir),
			corev1ac.VolumeMount().WithName(names.VolumeTmp).WithMountPath(names.TmpMountPath),
			corev1ac.VolumeMount().WithName(names.VolumeSecrets).WithMountPath(names.SecretsMountPath).WithReadOnly(true),
		).
		WithSecurityContext(restrictedSecurityContext())
	if r := resourcesApplyConfiguration(rs.Spec.Postgres.Resources); r != nil {
		c.WithResources(r)
	}
	if images.PullPolicy != "" {
		c.WithImagePullPolicy(images.PullPolicy)
	}
	return c
}

func renderAgentContainer(rs *regentv1.ReplicaSet, images Images, stores storeMounts) *corev1ac.ContainerApplyConfiguration {
	httpProbe := func(path string) *corev1ac.ProbeApplyConfiguration {
		// The agent serves over TLS only; the kubelet does not check
		// its certificate, the operator does.
		return corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithScheme(corev1.URISchemeHTTPS).
			WithPath(path).WithPort(intstr.FromString(names.PortNameAgentHTTP)))
	}
	c := corev1ac.Container().
		WithName(names.ContainerAgent).
		WithImage(images.Regent).
		WithCommand(names.ImageBinaryPath, "agent").
		WithEnv(podEnv(rs.Name)...).
		WithEnv(
			corev1ac.EnvVar().WithName(names.EnvAppDatabase).WithValue(rs.AppDatabase()),
			corev1ac.EnvVar().WithName(names.EnvAppOwner).WithValue(rs.AppOwner()),
		).
		WithEnv(stores.agentEnv(rs)...).
		WithPorts(
			corev1ac.ContainerPort().WithName(names.PortNameRelay).
				WithContainerPort(names.PortRelay).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName(names.PortNameAgentHTTP).
				WithContainerPort(names.PortAgentHTTP).WithProtocol(corev1.ProtocolTCP),
		).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(names.VolumeRun).WithMountPath(names.RunDir),
			corev1ac.VolumeMount().WithName(names.VolumeTmp).WithMountPath(names.TmpMountPath),
			corev1ac.VolumeMount().WithName(names.VolumeSecrets).WithMountPath(names.SecretsMountPath).WithReadOnly(true),
			corev1ac.VolumeMount().WithName(names.VolumeSAToken).WithMountPath(names.SATokenMountPath).WithReadOnly(true),
		).
		// The agent answers /healthz as soon as it runs with its
		// certificate (the operator issues it before the pod is made); a slow bootstrap
		// (initdb, a large base backup) shows in /readyz, not in restarts.
		WithStartupProbe(httpProbe("/healthz").WithPeriodSeconds(1).WithFailureThreshold(60)).
		WithLivenessProbe(httpProbe("/healthz").WithPeriodSeconds(5).WithTimeoutSeconds(2).WithFailureThreshold(6)).
		// Readiness follows the role quickly: a fenced leader leaves its
		// Service within about a second, a follower that stopped streaming
		// after a grace of 3 s (replica/agent/http.go: the winner of a
		// failover must not wait out a probe period to serve).
		WithReadinessProbe(httpProbe("/readyz").WithPeriodSeconds(1).WithTimeoutSeconds(1).WithFailureThreshold(1)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")})).
		WithSecurityContext(restrictedSecurityContext())
	if images.PullPolicy != "" {
		c.WithImagePullPolicy(images.PullPolicy)
	}
	return c
}

func renderVolumes(cluster string, stores storeMounts) []*corev1ac.VolumeApplyConfiguration {
	secretPassword := func(secret, path string) *corev1ac.VolumeProjectionApplyConfiguration {
		return corev1ac.VolumeProjection().WithSecret(corev1ac.SecretProjection().
			WithName(secret).
			WithItems(corev1ac.KeyToPath().WithKey(corev1.BasicAuthPasswordKey).WithPath(path)))
	}
	return []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName(names.VolumeRun).WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
		corev1ac.Volume().WithName(names.VolumeTmp).WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
		corev1ac.Volume().WithName(names.VolumeSecrets).WithProjected(corev1ac.ProjectedVolumeSource().
			WithDefaultMode(0o440).
			WithSources(
				secretPassword(names.SuperuserSecret(cluster), "superuser-password"),
				secretPassword(names.ReplicationSecret(cluster), "replication-password"),
				secretPassword(names.AppSecret(cluster), "app-password"),
			).
			WithSources(stores.projections()...)),
		// What automountServiceAccountToken would mount, for the agent only.
		corev1ac.Volume().WithName(names.VolumeSAToken).WithProjected(corev1ac.ProjectedVolumeSource().
			WithDefaultMode(0o440).
			WithSources(
				corev1ac.VolumeProjection().WithServiceAccountToken(corev1ac.ServiceAccountTokenProjection().
					WithPath("token").WithExpirationSeconds(3607)),
				corev1ac.VolumeProjection().WithConfigMap(corev1ac.ConfigMapProjection().
					WithName("kube-root-ca.crt").
					WithItems(corev1ac.KeyToPath().WithKey("ca.crt").WithPath("ca.crt"))),
				corev1ac.VolumeProjection().WithDownwardAPI(corev1ac.DownwardAPIProjection().
					WithItems(corev1ac.DownwardAPIVolumeFile().WithPath("namespace").
						WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("metadata.namespace")))),
			)),
	}
}

// defaultAffinity prefers to put the pods of a cluster on different nodes,
// so that one lost node takes at most one copy of the data.
func defaultAffinity(cluster string) *corev1ac.AffinityApplyConfiguration {
	return corev1ac.Affinity().WithPodAntiAffinity(corev1ac.PodAntiAffinity().
		WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().
			WithWeight(100).
			WithPodAffinityTerm(corev1ac.PodAffinityTerm().
				WithTopologyKey(corev1.LabelHostname).
				WithLabelSelector(labelSelector(names.SelectorLabels(cluster))))))
}

// resourcesApplyConfiguration converts the user's resources, or returns nil
// when they set none (so that the operator does not own an empty field).
func resourcesApplyConfiguration(r corev1.ResourceRequirements) *corev1ac.ResourceRequirementsApplyConfiguration {
	if len(r.Requests) == 0 && len(r.Limits) == 0 && len(r.Claims) == 0 {
		return nil
	}
	ac := corev1ac.ResourceRequirements()
	if len(r.Requests) > 0 {
		ac.WithRequests(r.Requests)
	}
	if len(r.Limits) > 0 {
		ac.WithLimits(r.Limits)
	}
	for _, c := range r.Claims {
		ac.WithClaims(corev1ac.ResourceClaim().WithName(c.Name).WithRequest(c.Request))
	}
	return ac
}

// affinityApplyConfiguration converts the user's affinity. Apply
// configurations mirror the JSON of their types, so a JSON round trip is
// exact.
func affinityApplyConfiguration(a *corev1.Affinity) *corev1ac.AffinityApplyConfiguration {
	return convertJSON[corev1ac.AffinityApplyConfiguration](a)
}

func topologySpreadApplyConfiguration(c *corev1.TopologySpreadConstraint) *corev1ac.TopologySpreadConstraintApplyConfiguration {
	return convertJSON[corev1ac.TopologySpreadConstraintApplyConfiguration](c)
}

// convertJSON converts between types with the same JSON shape. Both sides
// are API types generated from one schema, so an error is a programming
// error.
func convertJSON[T any](in any) *T {
	b, err := json.Marshal(in)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", in, err))
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("unmarshal %T into %T: %v", in, out, err))
	}
	return out
}

// storageSize is the data volume's size as instance sizes the WAL from it
// (spec.storage.size, which the CRD checks, or its default).
func storageSize(rs *regentv1.ReplicaSet) string {
	q, err := rs.StorageSize()
	if err != nil {
		return ""
	}
	return q.String()
}
