// Package chart_test checks the Helm chart with the real helm: lint, the
// schema's refusals, and what it renders (CRD kept on uninstall, the
// operator's RBAC identical to the generated one, hardened pods).
package chart_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(root(), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("bin/helm is missing: run `make tools-local` (make test does)")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = errors.New(strings.TrimSpace(errb.String()))
	}
	return out.String(), err
}

func chartDir() string { return filepath.Join(root(), "charts", "regent") }

// render returns the chart's objects by kind.
func render(t *testing.T, sets ...string) map[string][][]byte {
	t.Helper()
	args := []string{"template", "r", chartDir(), "--namespace", "regent-system"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", sets, err)
	}
	objs := map[string][][]byte{}
	for _, doc := range strings.Split(out, "\n---") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil || meta.Kind == "" {
			continue
		}
		objs[meta.Kind] = append(objs[meta.Kind], []byte(doc))
	}
	return objs
}

func TestChartLints(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", chartDir()); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

func TestSchemaRefusesBadValues(t *testing.T) {
	for set, want := range map[string]string{
		"replicaCount=3":           "replicaCount",
		"logLevel=loud":            "logLevel",
		"image.pullPolicy=Often":   "pullPolicy",
		"metrics.port=80":          "port",
		"nosuchvalue=1":            "nosuchvalue",
		"watchNamespaces={Team_B}": "watchNamespaces",
	} {
		_, err := helm(t, "template", "r", chartDir(), "--set", set)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: got %v, want an error naming %s", set, err, want)
		}
	}
}

func TestCRDsAreTheGeneratedOnesAndKept(t *testing.T) {
	objs := render(t)
	files := []string{"regent.dev_replicasets.yaml", "regent.dev_backups.yaml"}
	if len(objs["CustomResourceDefinition"]) != len(files) {
		t.Fatalf("%d CRDs rendered, want %d", len(objs["CustomResourceDefinition"]), len(files))
	}
	for i, f := range files {
		var got, want apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(objs["CustomResourceDefinition"][i], &got); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root(), "config", "crd", "bases", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, &want); err != nil {
			t.Fatal(err)
		}
		if got.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("%s is not kept on helm uninstall: deleting it would delete every object of its kind", want.Name)
		}
		if !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("the chart's %s differs from config/crd/bases: run make manifests", want.Name)
		}
	}
	if n := len(render(t, "crds.install=false")["CustomResourceDefinition"]); n != 0 {
		t.Errorf("crds.install=false still renders %d CRDs", n)
	}
}

func TestOperatorRBACIsTheGeneratedOne(t *testing.T) {
	var got, want rbacv1.ClusterRole
	objs := render(t)
	if err := yaml.UnmarshalStrict(objs["ClusterRole"][0], &got); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got.Rules, want.Rules) {
		t.Errorf("the chart's ClusterRole rules differ from config/rbac/role.yaml")
	}
}

// With watchNamespaces, the operator watches those namespaces alone and
// has the generated rules as a Role in each: nothing cluster-wide.
func TestNamespacedInstall(t *testing.T) {
	objs := render(t, "watchNamespaces={team-a,team-b}")
	if n := len(objs["ClusterRole"]) + len(objs["ClusterRoleBinding"]); n != 0 {
		t.Errorf("a namespaced install renders %d cluster-wide RBAC objects", n)
	}
	b, err := os.ReadFile(filepath.Join(root(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	bound := map[string]bool{}
	for _, doc := range objs["Role"] {
		var role rbacv1.Role
		if err := yaml.UnmarshalStrict(doc, &role); err != nil {
			t.Fatal(err)
		}
		if role.Namespace == "team-a" || role.Namespace == "team-b" {
			bound[role.Namespace] = true
			if !equality.Semantic.DeepEqual(role.Rules, want.Rules) {
				t.Errorf("the Role in %s differs from config/rbac/role.yaml", role.Namespace)
			}
		}
	}
	if !bound["team-a"] || !bound["team-b"] {
		t.Errorf("Roles rendered in %v, want team-a and team-b", bound)
	}
	var bindings int
	for _, doc := range objs["RoleBinding"] {
		var rb rbacv1.RoleBinding
		if err := yaml.UnmarshalStrict(doc, &rb); err != nil {
			t.Fatal(err)
		}
		if (rb.Namespace == "team-a" || rb.Namespace == "team-b") && rb.RoleRef.Kind == "Role" &&
			len(rb.Subjects) == 1 && rb.Subjects[0].Namespace == "regent-system" {
			bindings++
		}
	}
	if bindings != 2 {
		t.Errorf("%d RoleBindings bind the operator in the watched namespaces, want 2", bindings)
	}
	if !strings.Contains(string(objs["Deployment"][0]), "- --watch-namespaces=team-a,team-b") {
		t.Error("the operator is not told which namespaces to watch")
	}
}

func TestDeploymentIsHardenedAndConfigured(t *testing.T) {
	for _, tt := range []struct {
		sets         []string
		replicas     int32
		antiAffinity bool
		image        string
	}{
		{nil, 2, true, "regent:dev"},
		{[]string{"replicaCount=1", "image.tag=v1.2.3", "image.repository=example.org/regent"}, 1, false, "example.org/regent:v1.2.3"},
	} {
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict(render(t, tt.sets...)["Deployment"][0], &d); err != nil {
			t.Fatal(err)
		}
		if *d.Spec.Replicas != tt.replicas {
			t.Errorf("%v: %d replicas, want %d", tt.sets, *d.Spec.Replicas, tt.replicas)
		}
		if (d.Spec.Template.Spec.Affinity != nil) != tt.antiAffinity {
			t.Errorf("%v: anti-affinity %v, want %v", tt.sets, d.Spec.Template.Spec.Affinity != nil, tt.antiAffinity)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != tt.image || !strings.Contains(strings.Join(c.Args, " "), "--regent-image="+tt.image) {
			t.Errorf("%v: image %s, args %v; want %s for both", tt.sets, c.Image, c.Args, tt.image)
		}
		if !strings.Contains(strings.Join(c.Args, " "), "--leader-elect") {
			t.Error("no leader election: two replicas would both act")
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil ||
			!*sc.ReadOnlyRootFilesystem || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("container security context not hardened: %+v", sc)
		}
		if ps := d.Spec.Template.Spec.SecurityContext; ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
			t.Error("the pod may run as root")
		}
	}
}

// With networkPolicy.enabled, the operator makes the clusters' policies and
// names its own pods in them by the labels its Deployment gives them.
func TestNetworkPolicyNamesTheOperatorsPods(t *testing.T) {
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(render(t, "networkPolicy.enabled=true")["Deployment"][0], &d); err != nil {
		t.Fatal(err)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--network-policies") {
		t.Fatalf("no --network-policies in %v", args)
	}
	labels := map[string]string{}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--operator-pod-labels="); ok {
			for _, pair := range strings.Split(v, ",") {
				k, v, _ := strings.Cut(pair, "=")
				labels[k] = v
			}
		}
	}
	if len(labels) == 0 {
		t.Fatalf("no --operator-pod-labels in %v", args)
	}
	for k, v := range labels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the policies would select %s=%s; the operator's pods have %v", k, v, d.Spec.Template.Labels)
		}
	}
	var namespaceFromAPI bool
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		namespaceFromAPI = namespaceFromAPI || e.Name == "POD_NAMESPACE" && e.ValueFrom != nil
	}
	if !namespaceFromAPI {
		t.Error("the operator is not told its namespace ($POD_NAMESPACE)")
	}
	d = appsv1.Deployment{}
	if err := yaml.UnmarshalStrict(render(t)["Deployment"][0], &d); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--network-policies") {
		t.Error("network policies are on by default")
	}
}
