package controllers

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// renderedPod renders the pod template of rs into the typed API object, as
// the API server would store it.
func renderedPod(t *testing.T, rs *regentv1.ReplicaSet, images Images) corev1.PodTemplateSpec {
	t.Helper()
	b, err := json.Marshal(renderPodTemplate(rs, images, storeMounts{}))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func mounts(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, v := range c.VolumeMounts {
		m[v.Name] = v.MountPath
	}
	return m
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestPodTemplate(t *testing.T) {
	images := Images{Regent: "regent:v1", Postgres: "postgres:15"}
	base := func(mutate ...func(*regentv1.ReplicaSet)) *regentv1.ReplicaSet {
		rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "prod"}}
		for _, m := range mutate {
			m(rs)
		}
		return rs
	}
	tests := []struct {
		name  string
		rs    *regentv1.ReplicaSet
		check func(t *testing.T, pod corev1.PodTemplateSpec)
	}{
		{
			name: "layout of docs/architecture.md",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				if len(pod.Spec.InitContainers) != 1 || len(pod.Spec.Containers) != 2 {
					t.Fatalf("want 1 init container and 2 containers, got %d and %d",
						len(pod.Spec.InitContainers), len(pod.Spec.Containers))
				}
				boot := container(t, pod.Spec, names.ContainerBootstrap)
				if boot.Image != "regent:v1" || mounts(boot)[names.VolumeRun] != "/regent" {
					t.Errorf("bootstrap: image %s mounts %v", boot.Image, mounts(boot))
				}
				pg := container(t, pod.Spec, names.ContainerPostgres)
				if pg.Image != "postgres:15" || pg.Command[0] != "/regent/bin/regent" || pg.Command[1] != "instance" {
					t.Errorf("postgres: image %s command %v", pg.Image, pg.Command)
				}
				if mounts(pg)[names.VolumeData] != "/var/lib/postgresql/data" {
					t.Errorf("postgres mounts %v", mounts(pg))
				}
				agent := container(t, pod.Spec, names.ContainerAgent)
				if agent.Image != "regent:v1" || agent.Command[1] != "agent" {
					t.Errorf("agent: image %s command %v", agent.Image, agent.Command)
				}
				ports := map[string]int32{}
				for _, c := range pod.Spec.Containers {
					for _, p := range c.Ports {
						ports[p.Name] = p.ContainerPort
					}
				}
				want := map[string]int32{"postgres": 5432, "relay": 5433, "agent-http": 8008}
				for n, p := range want {
					if ports[n] != p {
						t.Errorf("port %s = %d, want %d", n, ports[n], p)
					}
				}
			},
		},
		{
			name: "only the agent holds Kubernetes credentials",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				if ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) {
					t.Error("automountServiceAccountToken must be false")
				}
				for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
					_, has := mounts(c)[names.VolumeSAToken]
					if has != (c.Name == names.ContainerAgent) {
						t.Errorf("container %s: token mounted = %v", c.Name, has)
					}
				}
				agent := container(t, pod.Spec, names.ContainerAgent)
				if mounts(agent)[names.VolumeSAToken] != "/var/run/secrets/kubernetes.io/serviceaccount" {
					t.Errorf("agent token at %q, not where client-go looks", mounts(agent)[names.VolumeSAToken])
				}
			},
		},
		{
			name: "POD_IP from the downward API in both long-running containers",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				for _, name := range []string{names.ContainerPostgres, names.ContainerAgent} {
					e := envOf(container(t, pod.Spec, name))
					ip := e["POD_IP"]
					if ip.ValueFrom == nil || ip.ValueFrom.FieldRef == nil || ip.ValueFrom.FieldRef.FieldPath != "status.podIP" {
						t.Errorf("%s: POD_IP = %+v", name, ip)
					}
					if e["REGENT_CLUSTER"].Value != "db" {
						t.Errorf("%s: REGENT_CLUSTER = %q", name, e["REGENT_CLUSTER"].Value)
					}
				}
			},
		},
		{
			name: "restricted pod security standard",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				psc := pod.Spec.SecurityContext
				if !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsUser, 0) != 999 ||
					psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("pod security context %+v", psc)
				}
				for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
					sc := c.SecurityContext
					if sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
						!ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !ptr.Deref(sc.RunAsNonRoot, false) ||
						sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
						t.Errorf("container %s security context %+v", c.Name, sc)
					}
				}
			},
		},
		{
			name: "probes on the agent port",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				agent := container(t, pod.Spec, names.ContainerAgent)
				for what, p := range map[string]*corev1.Probe{
					"startup": agent.StartupProbe, "liveness": agent.LivenessProbe, "readiness": agent.ReadinessProbe,
				} {
					if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != names.PortNameAgentHTTP {
						t.Errorf("%s probe %+v", what, p)
					}
				}
				if agent.ReadinessProbe.HTTPGet.Path != "/readyz" || agent.LivenessProbe.HTTPGet.Path != "/healthz" {
					t.Errorf("probe paths %s %s", agent.ReadinessProbe.HTTPGet.Path, agent.LivenessProbe.HTTPGet.Path)
				}
			},
		},
		{
			name: "spec image and resources",
			rs: base(func(rs *regentv1.ReplicaSet) {
				rs.Spec.Postgres.Image = "registry.example/postgres:15.8"
				rs.Spec.Postgres.Parameters = map[string]string{"work_mem": "8MB", "max_connections": "200"}
				rs.Spec.Postgres.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				}
			}),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				pg := container(t, pod.Spec, names.ContainerPostgres)
				if pg.Image != "registry.example/postgres:15.8" {
					t.Errorf("image %s", pg.Image)
				}
				if got := pg.Resources.Requests.Memory().String(); got != "1Gi" {
					t.Errorf("memory request %s", got)
				}
				if got := envOf(pg)[names.EnvPGParameters].Value; got != `{"max_connections":"200","work_mem":"8MB"}` {
					t.Errorf("parameters for instance: %s", got)
				}
				// The WAL's budget follows the volume's size.
				if got := envOf(pg)[names.EnvStorageSize].Value; got != "1Gi" {
					t.Errorf("storage size for instance: %q", got)
				}
			},
		},
		{
			name: "default anti-affinity spreads pods over nodes",
			rs:   base(),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				a := pod.Spec.Affinity
				if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
					t.Fatalf("affinity %+v", a)
				}
				term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
				if term.TopologyKey != corev1.LabelHostname || term.LabelSelector.MatchLabels[names.LabelCluster] != "db" {
					t.Errorf("anti-affinity term %+v", term)
				}
			},
		},
		{
			name: "user affinity and topology spread replace the default",
			rs: base(func(rs *regentv1.ReplicaSet) {
				rs.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
						MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}},
					}}},
				}}
				rs.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
					MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule,
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{names.LabelCluster: "db"}},
				}}
			}),
			check: func(t *testing.T, pod corev1.PodTemplateSpec) {
				t.Helper()
				a := pod.Spec.Affinity
				if a.PodAntiAffinity != nil || a.NodeAffinity == nil ||
					a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "ssd" {
					t.Errorf("affinity %+v", a)
				}
				tsc := pod.Spec.TopologySpreadConstraints
				if len(tsc) != 1 || tsc[0].TopologyKey != corev1.LabelTopologyZone || tsc[0].MaxSkew != 1 {
					t.Errorf("topology spread %+v", tsc)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, renderedPod(t, tt.rs, images))
		})
	}
}

func TestAppSecretURIEscapesPasswords(t *testing.T) {
	rs := &regentv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "prod"}}
	for _, password := range []string{"plain32chars", "p@ss:w/rd?#%", `back\slash`} {
		t.Run(password, func(t *testing.T) {
			s := renderSecret(rs, credentials{secret: "db-app", username: "app", password: password}, true, []byte("CA"))
			uri := string(s.Data["uri"])
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatalf("uri %q does not parse: %v", uri, err)
			}
			if got, _ := u.User.Password(); got != password {
				t.Errorf("uri %q carries password %q, want %q", uri, got, password)
			}
			if u.Host != "db-leader.prod.svc:5432" || u.Path != "/app" {
				t.Errorf("uri %q: host %s path %s", uri, u.Host, u.Path)
			}
		})
	}
}

func TestGeneratedPasswords(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p, err := generatePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 32 {
			t.Fatalf("password %q has %d characters, want 32", p, len(p))
		}
		// The property that matters: nothing to quote in a URI, a .pgpass
		// line or a shell word.
		if url.QueryEscape(p) != p || strings.ContainsAny(p, ":\\'\"$` -_.~") {
			t.Fatalf("password %q has characters a URI, .pgpass or shell would need to quote", p)
		}
		if seen[p] {
			t.Fatalf("password %q generated twice", p)
		}
		seen[p] = true
	}
}
