// Package chart_test checks the Helm chart with the real helm: lint, the
// schema's refusals, and what it renders (CRD kept on uninstall, the
// operator's RBAC identical to the generated one, hardened pods, the
// monitoring objects); and its monitoring files with Debian's promtool
// (the alerts' unit tests, the dashboard's queries).
package chart_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/regent-dev/regent/internal/names"
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
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return renderArgs(t, args...)
}

// renderArgs is render with helm template's own flags (--set, --api-versions).
func renderArgs(t *testing.T, flags ...string) map[string][][]byte {
	t.Helper()
	args := append([]string{"template", "r", chartDir(), "--namespace", "regent-system"}, flags...)
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", flags, err)
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

// The monitoring: files/prometheus-rules.yaml (promtool's checks and unit
// tests), the Prometheus Operator objects and when they render, the Grafana
// dashboard and its queries.

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: install Debian's prometheus: hack/deps.sh")
	}
	return p
}

// runPromtool runs promtool in dir and returns its output, stdout and
// stderr together.
func runPromtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func filesDir() string { return filepath.Join(chartDir(), "files") }

var ruleTests = []string{"prometheus-rules.test.yaml", "prometheus-rules.certificates.test.yaml"}

func TestPrometheusRulesPassPromtool(t *testing.T) {
	if out, err := runPromtool(t, filesDir(), "check", "rules", "prometheus-rules.yaml"); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := runPromtool(t, filesDir(), append([]string{"test", "rules"}, ruleTests...)...); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// Every alert of the rule file is tested firing, and quiet.
func TestEveryAlertIsTestedBothWays(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	readYAML(t, filepath.Join(filesDir(), "prometheus-rules.yaml"), &rules)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range ruleTests {
		var tests struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string
					ExpAlerts []any `json:"exp_alerts"`
				} `json:"alert_rule_test"`
			}
		}
		readYAML(t, filepath.Join(filesDir(), f), &tests)
		for _, tt := range tests.Tests {
			for _, a := range tt.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	var alerts int
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: tested firing %v, tested quiet %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	for _, want := range []string{"RegentNoLeader", "RegentReplicationLagHigh", "RegentDiskAlmostFull",
		"RegentWALArchivingFailing", "RegentFailover", "RegentCertificateExpiring", "RegentMemberDown"} {
		if !fires[want] {
			t.Errorf("no alert %s tested", want)
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts in prometheus-rules.yaml")
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var monitoringKinds = []string{"PodMonitor", "ServiceMonitor", "PrometheusRule"}

// auto renders the Prometheus Operator's objects when the cluster serves
// its API (helm install asks it; helm template is told with
// --api-versions); true and false force them.
func TestMonitoringObjectsFollowTheAPI(t *testing.T) {
	const api = "--api-versions=monitoring.coreos.com/v1"
	all := func(v string) []string {
		var flags []string
		for _, k := range []string{"podMonitor", "serviceMonitor", "prometheusRule"} {
			flags = append(flags, "--set", "monitoring."+k+".enabled="+v)
		}
		return flags
	}
	for _, tt := range []struct {
		name  string
		flags []string
		want  bool
	}{
		{"no API, auto", nil, false},
		{"API, auto", []string{api}, true},
		{"API for each kind, auto", []string{"--api-versions=monitoring.coreos.com/v1/PodMonitor",
			"--api-versions=monitoring.coreos.com/v1/ServiceMonitor", "--api-versions=monitoring.coreos.com/v1/PrometheusRule"}, true},
		{"API, forced off", append([]string{api}, all("false")...), false},
		{"no API, forced on", all("true"), true},
	} {
		objs := renderArgs(t, tt.flags...)
		for _, kind := range monitoringKinds {
			if n := len(objs[kind]); n != map[bool]int{false: 0, true: 1}[tt.want] {
				t.Errorf("%s: %d %s rendered, want %v", tt.name, n, kind, tt.want)
			}
		}
		if n := len(objs["ConfigMap"]); n != 0 {
			t.Errorf("%s: %d ConfigMaps rendered: the Grafana dashboard is on by default", tt.name, n)
		}
	}
	// One forced off, the others auto.
	objs := renderArgs(t, api, "--set", "monitoring.podMonitor.enabled=false")
	if len(objs["PodMonitor"]) != 0 || len(objs["ServiceMonitor"]) != 1 || len(objs["PrometheusRule"]) != 1 {
		t.Errorf("podMonitor.enabled=false: %d PodMonitors, %d ServiceMonitors, %d PrometheusRules; want 0, 1, 1",
			len(objs["PodMonitor"]), len(objs["ServiceMonitor"]), len(objs["PrometheusRule"]))
	}
}

func TestMonitoringSchemaRefusesBadValues(t *testing.T) {
	for set, want := range map[string][]string{
		"monitoring.podMonitor.enabled=maybe":      {"/monitoring/podMonitor/enabled", "'auto', true, false"},
		"monitoring.serviceMonitor.enabled=yes":    {"/monitoring/serviceMonitor/enabled", "'auto', true, false"},
		"monitoring.prometheusRule.enabled=1":      {"/monitoring/prometheusRule/enabled", "'auto', true, false"},
		"monitoring.grafanaDashboard.enabled=auto": {"/monitoring/grafanaDashboard/enabled", "boolean"},
		"monitoring.podMonitor.interval=often":     {"/monitoring/podMonitor/interval"},
		"monitoring.serviceMonitor.scheme=https":   {"/monitoring/serviceMonitor", "scheme"},
	} {
		_, err := helm(t, "template", "r", chartDir(), "--set", set)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("--set %s: got %v, want an error saying %q", set, err, w)
			}
		}
	}
}

// The PrometheusRule carries the rule file's groups, unchanged, and the
// monitors their extra labels.
func TestPrometheusRuleIsTheRuleFile(t *testing.T) {
	objs := renderArgs(t, "--api-versions=monitoring.coreos.com/v1", "--set", "monitoring.prometheusRule.labels.release=prom")
	var rule struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct{ Groups any }
	}
	if err := yaml.Unmarshal(objs["PrometheusRule"][0], &rule); err != nil {
		t.Fatal(err)
	}
	var file struct{ Groups any }
	readYAML(t, filepath.Join(filesDir(), "prometheus-rules.yaml"), &file)
	if file.Groups == nil || !equality.Semantic.DeepEqual(rule.Spec.Groups, file.Groups) {
		t.Error("the PrometheusRule's groups differ from files/prometheus-rules.yaml")
	}
	if rule.Metadata.Labels["release"] != "prom" || rule.Metadata.Labels["app.kubernetes.io/name"] != "regent" {
		t.Errorf("the PrometheusRule's labels are %v, want the chart's and release=prom", rule.Metadata.Labels)
	}
}

type relabeling struct {
	SourceLabels []string `json:"sourceLabels"`
	TargetLabel  string   `json:"targetLabel"`
	Action       string
}

// The PodMonitor scrapes every database pod's agent and gives its series
// the namespace, pod and cluster the rules and the dashboard group by.
func TestPodMonitorScrapesTheAgents(t *testing.T) {
	var pm struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			NamespaceSelector struct{ Any bool }
			Selector          struct {
				MatchLabels map[string]string `json:"matchLabels"`
			}
			PodMetricsEndpoints []struct {
				Port, Path, Scheme string
				TLSConfig          map[string]any `json:"tlsConfig"`
				Relabelings        []relabeling
			} `json:"podMetricsEndpoints"`
		}
	}
	objs := renderArgs(t, "--api-versions=monitoring.coreos.com/v1", "--set", "monitoring.podMonitor.labels.release=prom")
	if err := yaml.Unmarshal(objs["PodMonitor"][0], &pm); err != nil {
		t.Fatal(err)
	}
	if !pm.Spec.NamespaceSelector.Any {
		t.Error("the PodMonitor does not look in every namespace")
	}
	wantSelector := map[string]string{names.LabelManagedBy: names.ManagedBy, names.LabelName: names.AppName}
	if !equality.Semantic.DeepEqual(pm.Spec.Selector.MatchLabels, wantSelector) {
		t.Errorf("the PodMonitor selects %v, want the database pods' %v", pm.Spec.Selector.MatchLabels, wantSelector)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	// The agent serves TLS only (replica/agent/http.go).
	if ep.Port != names.PortNameAgentHTTP || ep.Path != "/metrics" || ep.Scheme != "https" || ep.TLSConfig == nil {
		t.Errorf("endpoint %+v, want port %s, /metrics, https with a tlsConfig", ep, names.PortNameAgentHTTP)
	}
	meta := func(label string) string {
		return "__meta_kubernetes_pod_label_" + strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(label)
	}
	want := map[string]string{"namespace": "__meta_kubernetes_namespace", "pod": "__meta_kubernetes_pod_name", "cluster": meta(names.LabelCluster)}
	for _, r := range ep.Relabelings {
		if src, ok := want[r.TargetLabel]; ok && (r.Action == "" || r.Action == "replace") && slices.Equal(r.SourceLabels, []string{src}) {
			delete(want, r.TargetLabel)
		}
	}
	if len(want) != 0 {
		t.Errorf("no relabelings set %v (from %v)", slices.Sorted(maps.Keys(want)), want)
	}
	if pm.Metadata.Labels["release"] != "prom" {
		t.Errorf("the PodMonitor's labels are %v, want release=prom too", pm.Metadata.Labels)
	}
}

// The ServiceMonitor scrapes the operator's metrics Service and keeps the
// namespace and pod its series name (honorLabels).
func TestServiceMonitorScrapesTheOperator(t *testing.T) {
	objs := renderArgs(t, "--api-versions=monitoring.coreos.com/v1")
	var sm struct {
		Spec struct {
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			}
			Endpoints []struct {
				Port, Path, Scheme string
				HonorLabels        bool `json:"honorLabels"`
			}
		}
	}
	if err := yaml.Unmarshal(objs["ServiceMonitor"][0], &sm); err != nil {
		t.Fatal(err)
	}
	var svc corev1.Service
	if len(objs["Service"]) != 1 {
		t.Fatalf("%d Services rendered, want the metrics Service", len(objs["Service"]))
	}
	if err := yaml.UnmarshalStrict(objs["Service"][0], &svc); err != nil {
		t.Fatal(err)
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 {
		t.Fatal("the ServiceMonitor selects every Service")
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s; the metrics Service has %v", k, v, svc.Labels)
		}
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"regent-system"}) {
		t.Errorf("the ServiceMonitor looks in %v, want the release's namespace", sm.Spec.NamespaceSelector.MatchNames)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || !sm.Spec.Endpoints[0].HonorLabels ||
		sm.Spec.Endpoints[0].Scheme != "http" {
		t.Errorf("endpoints %+v, want port %s over http with honorLabels", sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
	}
	// Without the metrics Service: none on auto, an error when forced.
	if n := len(renderArgs(t, "--api-versions=monitoring.coreos.com/v1", "--set", "metrics.enabled=false")["ServiceMonitor"]); n != 0 {
		t.Errorf("metrics.enabled=false renders %d ServiceMonitors", n)
	}
	_, err := helm(t, "template", "r", chartDir(), "--set", "metrics.enabled=false", "--set", "monitoring.serviceMonitor.enabled=true")
	if err == nil || !strings.Contains(err.Error(), "metrics.enabled") {
		t.Errorf("serviceMonitor forced on without metrics: got %v, want an error naming metrics.enabled", err)
	}
}

func TestChartLintsWithMonitoring(t *testing.T) {
	args := []string{"lint", "--strict", chartDir()}
	for _, s := range []string{"monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
		"monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true"} {
		args = append(args, "--set", s)
	}
	if out, err := helm(t, args...); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

type dashboard struct {
	Title         string
	UID           string
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Type, Name string
			Query      any
		}
	}
	Panels []dashboardPanel
}

type dashboardPanel struct {
	ID           int
	Type, Title  string
	Collapsed    bool
	Panels       []json.RawMessage
	LibraryPanel json.RawMessage `json:"libraryPanel"`
	Datasource   struct{ Type, UID string }
	GridPos      struct{ H, W, X, Y int } `json:"gridPos"`
	Targets      []struct {
		RefID      string `json:"refId"`
		Expr       string
		Datasource struct{ Type, UID string }
	}
}

// readDashboard reads files/grafana-dashboard.json and checks its shape:
// its queries are panels[].targets[].expr, for anyone to extract.
func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filesDir(), "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	return d
}

func TestGrafanaDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("title %q, uid %q, schemaVersion %d", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		q, _ := v.Query.(string)
		vars[v.Name] = v.Type + " " + q
	}
	for name, want := range map[string]string{
		"datasource": "datasource prometheus",
		"namespace":  "query label_values(regent_agent_leader",
		"cluster":    "query label_values(regent_agent_leader",
	} {
		if !strings.HasPrefix(vars[name], want) {
			t.Errorf("variable %s is %q, want %q…", name, vars[name], want)
		}
	}
	ids := map[int]bool{}
	var targets int
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d taken", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.LibraryPanel != nil {
			t.Errorf("panel %q is a library panel", p.Title)
		}
		if p.Type == "row" {
			if p.Collapsed || len(p.Panels) != 0 || len(p.Targets) != 0 {
				t.Errorf("row %q holds panels: collapsed %v, %d panels", p.Title, p.Collapsed, len(p.Panels))
			}
			continue
		}
		if len(p.Targets) == 0 || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q: %d targets, size %dx%d", p.Title, len(p.Targets), p.GridPos.W, p.GridPos.H)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			targets++
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target %+v has no expr, refId or ${datasource}", p.Title, tg)
			}
			for _, v := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := dashboardVariables[v[1]]; !ok {
					t.Errorf("panel %q: unknown variable $%s in %s", p.Title, v[1], tg.Expr)
				}
			}
		}
	}
	if targets == 0 {
		t.Fatal("no queries in the dashboard")
	}
}

// What Grafana substitutes in the queries, as they are tested here.
var dashboardVariables = map[string]string{
	"namespace": ".*", "cluster": ".*", "__rate_interval": "2m", "__interval": "1m", "__range": "1h",
}

// dashboardExprs are the dashboard's queries, variables substituted, by
// "panel title/refId".
func dashboardExprs(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	r := regexp.MustCompile(`\$\{?(\w+)\}?`)
	var keys []string
	exprs := map[string]string{}
	for _, p := range readDashboard(t).Panels {
		for _, tg := range p.Targets {
			k := p.Title + "/" + tg.RefID
			keys = append(keys, k)
			exprs[k] = r.ReplaceAllStringFunc(tg.Expr, func(v string) string {
				if s, ok := dashboardVariables[r.FindStringSubmatch(v)[1]]; ok {
					return s
				}
				return v
			})
		}
	}
	return keys, exprs
}

// Each of the dashboard's queries is PromQL: promtool parses them as
// recording rules.
func TestGrafanaDashboardQueriesParse(t *testing.T) {
	keys, exprs := dashboardExprs(t)
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, k := range keys {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: exprs[k]})
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	dir := t.TempDir()
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runPromtool(t, dir, "check", "rules", "dashboard.yaml"); err != nil {
		for i := len(keys) - 1; i >= 0; i-- { // query_12 before query_1
			out = strings.ReplaceAll(out, fmt.Sprintf("dashboard:query_%d", i), keys[i])
		}
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}

// A running cluster's series as Prometheus scrapes them: db/pg, pg-0 leads
// pg-1 and pg-2 (Async mode, no failover yet), every agent scraped with
// its pod's target labels, the operator with honor_labels. The metrics are
// those of replica/agent and controllers/metrics.go.
func runningClusterSeries() []map[string]string {
	var series []map[string]string
	add := func(name, labels, values string) {
		series = append(series, map[string]string{"series": name + "{" + labels + "}", "values": values})
	}
	bit := func(b bool) string {
		if b {
			return "1x40"
		}
		return "0x40"
	}
	const counter = "0+7x40"
	pods := []string{"pg-0", "pg-1", "pg-2"}
	for i, pod := range pods {
		leader := i == 0
		target := fmt.Sprintf(`job="regent-system/r-regent-postgres",instance="10.1.0.%d:8008",container="agent",endpoint="agent-http",namespace="db",cluster="pg",pod=%q`, 10+i, pod)
		for name, values := range map[string]string{
			"regent_agent_leader": bit(leader), "regent_agent_epoch": "3x40", "regent_agent_fenced": "0x40",
			"regent_agent_sealed": "0x40", "regent_agent_commit_gate_open": bit(leader), "regent_agent_postgres_running": "1x40",
			"regent_agent_streaming": bit(!leader), "regent_agent_timeline": "3x40", "regent_agent_lease_remaining_seconds": "6x40",
			"regent_agent_certificate_expiry_timestamp_seconds": "7776000x40", "regent_agent_write_lsn_bytes": "50000000+1000x40",
			"regent_agent_received_lsn_bytes": "50000000+1000x40", "regent_agent_replayed_lsn_bytes": "50000000+1000x40",
			"regent_agent_wal_archive_pending_files": "2x40", "regent_agent_wal_archive_pending_bytes": "33554432x40",
			"regent_agent_wal_archive_failing": "0x40", "regent_agent_wal_archive_last_shipped_timestamp_seconds": "0+30x40",
			"regent_postgres_up": "1x40", "regent_postgres_in_recovery": bit(!leader), "regent_postgres_max_connections": "100x40",
			"regent_postgres_archiver_archived_total": counter, "regent_postgres_archiver_failed_total": "0x40",
			"regent_postgres_archiver_last_archived_timestamp_seconds": "0+30x40",
			"regent_postgres_archiver_last_failed_timestamp_seconds":   "0x40",
			"regent_postgres_wal_bytes_total":                          "0+100000x40", "regent_postgres_wal_directory_bytes": "167772160x40",
			"regent_agent_data_volume_used_bytes": "400000000x40", "regent_agent_data_volume_capacity_bytes": "1073741824x40",
		} {
			add(name, target, values)
		}
		for _, db := range []string{"postgres", "app"} {
			add("regent_postgres_xact_commits_total", target+`,database="`+db+`"`, counter)
			add("regent_postgres_xact_rollbacks_total", target+`,database="`+db+`"`, "0+1x40")
			add("regent_postgres_database_size_bytes", target+`,database="`+db+`"`, "8000000x40")
		}
		for _, state := range []string{"active", "idle"} {
			add("regent_postgres_connections", target+`,state="`+state+`"`, "3x40")
		}
		if !leader {
			add("regent_postgres_replay_lag_seconds", target, "0x40")
			continue
		}
		add("regent_postgres_commit_gate_lag_bytes", target, "0x40")
		for _, f := range pods[1:] {
			add("regent_postgres_replication_lag_bytes", target+`,follower="`+f+`"`, "0x40")
			add("regent_postgres_replication_lag_seconds", target+`,follower="`+f+`"`, "0x40")
			add("regent_postgres_replication_synchronous", target+`,follower="`+f+`"`, "0x40")
			add("regent_postgres_replication_slot_retained_wal_bytes", target+`,slot="`+f+`"`, "16777216x40")
			add("regent_postgres_replication_slot_active", target+`,slot="`+f+`"`, "1x40")
		}
	}
	operator := `job="r-regent-metrics",instance="10.2.0.5:8080",container="manager",endpoint="metrics",service="r-regent-metrics",namespace="db",cluster="pg"`
	add("regent_epoch", operator+`,pod="r-regent-5d8f7-x2x9k"`, "3x40")
	add("regent_max_lag_bytes", operator+`,pod="r-regent-5d8f7-x2x9k"`, "1048576x40")
	for _, pod := range pods {
		add("regent_certificate_expiry_timestamp_seconds", operator+`,pod="`+pod+`"`, "7776000x40")
		add("regent_member_disk_used_bytes", operator+`,pod="`+pod+`"`, "400000000x40")
		add("regent_member_disk_capacity_bytes", operator+`,pod="`+pod+`"`, "1073741824x40")
		if pod != pods[0] {
			add("regent_member_lag_bytes", operator+`,pod="`+pod+`"`, "0x40")
		}
	}
	return series
}

// Each of the dashboard's queries returns data on a running cluster's
// series. promtool test rules reports the result of each query expected to
// return nothing: a query it does not report returned nothing.
func TestGrafanaDashboardQueriesReturnData(t *testing.T) {
	keys, exprs := dashboardExprs(t)
	var cases []map[string]any
	for _, k := range keys {
		cases = append(cases, map[string]any{"expr": exprs[k], "eval_time": "15m", "exp_samples": []any{}})
	}
	file := map[string]any{
		"rule_files":          []string{"none.yaml"},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "30s", "input_series": runningClusterSeries(), "promql_expr_test": cases,
		}},
	}
	dir := t.TempDir()
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "queries.test.yaml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "none.yaml"), []byte("groups: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every query "fails": it returned data where none was expected.
	out, _ := runPromtool(t, dir, "test", "rules", "queries.test.yaml")
	if !strings.Contains(out, "expr: ") {
		t.Fatalf("promtool test rules ran no query:\n%s", out)
	}
	for _, k := range keys {
		report := fmt.Sprintf("expr: %q, time: 15m,", exprs[k])
		i := strings.Index(out, report)
		if i < 0 {
			t.Errorf("%s returns no data: %s", k, exprs[k])
			continue
		}
		rest := out[i+len(report):]
		if j := strings.Index(rest, "\n    expr: "); j >= 0 {
			rest = rest[:j]
		}
		if !strings.Contains(rest, "got: {") {
			t.Errorf("%s: %s\n%s", k, exprs[k], rest)
		}
	}
}

// The dashboard's ConfigMap, when asked for: Grafana's sidecar label, and
// the JSON of files/grafana-dashboard.json.
func TestGrafanaDashboardConfigMap(t *testing.T) {
	objs := render(t, "monitoring.grafanaDashboard.enabled=true", "monitoring.grafanaDashboard.namespace=grafana",
		"monitoring.grafanaDashboard.labels.team=db")
	if len(objs["ConfigMap"]) != 1 {
		t.Fatalf("%d ConfigMaps rendered, want the dashboard's", len(objs["ConfigMap"]))
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(objs["ConfigMap"][0], &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "db" || cm.Namespace != "grafana" {
		t.Errorf("ConfigMap %s/%s with labels %v, want grafana/… with grafana_dashboard=1 and team=db", cm.Namespace, cm.Name, cm.Labels)
	}
	b, err := os.ReadFile(filepath.Join(filesDir(), "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal([]byte(cm.Data["regent.json"]), &got); err != nil {
		t.Fatalf("the ConfigMap's regent.json: %v", err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Error("the ConfigMap's dashboard differs from files/grafana-dashboard.json")
	}
}
