package v1alpha1_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
)

func loadCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	b, err := os.ReadFile("../../config/crd/bases/regent.dev_replicasets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(b, crd); err != nil {
		t.Fatal(err)
	}
	return crd
}

// The CEL rule on spec.postgres.parameters spells out the owned parameters
// (markers cannot refer to Go values): it must list exactly OwnedParameters.
func TestOwnedParametersMatchTheCRD(t *testing.T) {
	crd := loadCRD(t)
	params := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.
		Properties["spec"].Properties["postgres"].Properties["parameters"]
	pattern := regexp.MustCompile(`^!has\(self\.(\w+)\)$`)
	var inCRD []string
	for _, r := range params.XValidations {
		m := pattern.FindStringSubmatch(r.Rule)
		if m == nil {
			continue
		}
		inCRD = append(inCRD, m[1])
		if want := m[1] + " is managed by Regent and cannot be set"; r.Message != want {
			t.Errorf("rule %q: message %q, want %q", r.Rule, r.Message, want)
		}
	}
	if !slices.Equal(inCRD, regentv1.OwnedParameters) {
		t.Errorf("CRD refuses %v,\nOwnedParameters is %v", inCRD, regentv1.OwnedParameters)
	}
}

// What `kubectl get dbrs` shows is part of the API.
func TestCRDPresentation(t *testing.T) {
	crd := loadCRD(t)
	if !slices.Equal(crd.Spec.Names.ShortNames, []string{"dbrs"}) {
		t.Errorf("shortNames %v", crd.Spec.Names.ShortNames)
	}
	if !slices.Equal(crd.Spec.Names.Categories, []string{"regent"}) {
		t.Errorf("categories %v", crd.Spec.Names.Categories)
	}
	v := crd.Spec.Versions[0]
	var columns []string
	for _, c := range v.AdditionalPrinterColumns {
		if c.Priority == 0 {
			columns = append(columns, strings.ToUpper(c.Name))
		}
	}
	want := []string{"LEADER", "READY", "PHASE", "EPOCH", "MAX LAG", "AGE"}
	if !slices.Equal(columns, want) {
		t.Errorf("printer columns %v, want %v", columns, want)
	}
	if v.Subresources == nil || v.Subresources.Status == nil || v.Subresources.Scale == nil {
		t.Fatal("status and scale subresources are required")
	}
	if s := v.Subresources.Scale; s.SpecReplicasPath != ".spec.replicas" || s.StatusReplicasPath != ".status.replicas" ||
		s.LabelSelectorPath == nil || *s.LabelSelectorPath != ".status.selector" {
		t.Errorf("scale subresource %+v", s)
	}
}
