// Package config_test checks what `kubectl apply -k config/default` installs,
// by building it with kustomize's own library.
package config_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

type object struct {
	kind, namespace, name string
	yaml                  []byte
}

func build(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []object
	for _, r := range res.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, object{r.GetKind(), r.GetNamespace(), r.GetName(), b})
	}
	return out
}

func find(t *testing.T, objs []object, kind, name string, into any) object {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			if err := yaml.UnmarshalStrict(o.yaml, into); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return o
		}
	}
	t.Fatalf("no %s %s in the build", kind, name)
	return object{}
}

func TestDefaultInstall(t *testing.T) {
	objs := build(t, "default")

	ns := &corev1.Namespace{}
	find(t, objs, "Namespace", "regent-system", ns)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace labels %v: the operator's namespace should enforce the restricted standard", ns.Labels)
	}
	find(t, objs, "CustomResourceDefinition", "replicasets.regent.dev", &map[string]any{})

	deploy := &appsv1.Deployment{}
	o := find(t, objs, "Deployment", "regent-manager", deploy)
	if o.namespace != "regent-system" {
		t.Errorf("Deployment in namespace %q", o.namespace)
	}
	pod := deploy.Spec.Template.Spec
	if pod.ServiceAccountName != "regent-manager" {
		t.Errorf("service account %q", pod.ServiceAccountName)
	}
	if !ptr.Deref(pod.SecurityContext.RunAsNonRoot, false) || pod.SecurityContext.SeccompProfile == nil {
		t.Errorf("pod security context %+v", pod.SecurityContext)
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", sc)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--leader-elect", "--metrics-bind-address=$(POD_IP):8080", "--health-probe-bind-address=$(POD_IP):8081"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Limits.Memory().IsZero() {
		t.Error("the manager needs probes and a memory limit")
	}

	binding := &rbacv1.ClusterRoleBinding{}
	find(t, objs, "ClusterRoleBinding", "regent-manager-rolebinding", binding)
	want := rbacv1.Subject{Kind: "ServiceAccount", Name: "regent-manager", Namespace: "regent-system"}
	if len(binding.Subjects) != 1 || binding.Subjects[0] != want {
		t.Errorf("binding subjects %+v, want %+v", binding.Subjects, want)
	}
	if binding.RoleRef.Name != "regent-manager-role" {
		t.Errorf("binding role %q", binding.RoleRef.Name)
	}
	role := &rbacv1.ClusterRole{}
	find(t, objs, "ClusterRole", "regent-manager-role", role)
	var grantsReplicaSets bool
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "regent.dev") && slices.Contains(r.Resources, "replicasets") {
			grantsReplicaSets = true
		}
	}
	if !grantsReplicaSets {
		t.Error("the manager role does not grant replicasets")
	}
}

func TestSamplesBuild(t *testing.T) {
	objs := build(t, "samples")
	if len(objs) != 1 || objs[0].kind != "ReplicaSet" {
		t.Fatalf("samples build %v", objs)
	}
}
