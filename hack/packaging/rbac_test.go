package packaging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// wildcards lists every "*" in rules (verbs, resources, API groups,
// resource names, non-resource URLs).
func wildcards(where string, rules []rbacv1.PolicyRule) []string {
	var out []string
	for i, r := range rules {
		for field, vals := range map[string][]string{
			"verbs": r.Verbs, "resources": r.Resources, "apiGroups": r.APIGroups,
			"resourceNames": r.ResourceNames, "nonResourceURLs": r.NonResourceURLs,
		} {
			for _, v := range vals {
				if strings.Contains(v, "*") {
					out = append(out, fmt.Sprintf("%s rule %d: %s contains %q", where, i, field, v))
				}
			}
		}
	}
	return out
}

// TestRBACHasNoWildcards covers every role users install: dist/install.yaml
// (so config/default and the chart, rendered from it) and the bundle's CSV
// and ClusterRoles.
func TestRBACHasNoWildcards(t *testing.T) {
	root := repoRoot(t)
	var found []string
	checked := 0
	docs := readDocs(t, filepath.Join(root, "dist", "install.yaml"))
	bundleFiles, _ := filepath.Glob(filepath.Join(root, "bundle", "manifests", "*.yaml"))
	for _, f := range bundleFiles {
		docs = append(docs, readDocs(t, f)...)
	}
	for _, d := range docs {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(d, &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal(d, &r); err != nil {
				t.Fatal(err)
			}
			found = append(found, wildcards(head.Kind+" "+head.Metadata.Name, r.Rules)...)
			checked++
		case "ClusterServiceVersion":
			var csv operatorsv1alpha1.ClusterServiceVersion
			if err := yaml.Unmarshal(d, &csv); err != nil {
				t.Fatal(err)
			}
			s := csv.Spec.InstallStrategy.StrategySpec
			for _, p := range append(s.ClusterPermissions, s.Permissions...) {
				found = append(found, wildcards("CSV permissions of "+p.ServiceAccountName, p.Rules)...)
				checked++
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d roles found to check", checked)
	}
	for _, f := range found {
		t.Error(f)
	}
}

func TestWildcardsAreFound(t *testing.T) {
	got := wildcards("test", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/*"}, Verbs: []string{"get", "*"}}})
	if len(got) != 2 {
		t.Fatalf("want 2 wildcards, got %q", got)
	}
}

func readDocs(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufioReader(data))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}
