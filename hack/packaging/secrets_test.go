package packaging

import (
	"path/filepath"
	"slices"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestSecretsOnlyInManagerNamespace: the manager could create and patch
// Secrets in every namespace (a no-op patch returns the data). No
// ClusterRole, and no CSV clusterPermissions, may grant Secrets; the
// manager's Secrets (evidence, ingest CA, provenance key, notifications)
// are in a Role of its own namespace.
func TestSecretsOnlyInManagerNamespace(t *testing.T) {
	root := repoRoot(t)
	grants := func(rules []rbacv1.PolicyRule) bool {
		return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, "") && (slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, "*"))
		})
	}
	docs := readDocs(t, filepath.Join(root, "dist", "install.yaml"))
	bundleFiles, _ := filepath.Glob(filepath.Join(root, "bundle", "manifests", "*.yaml"))
	for _, f := range bundleFiles {
		docs = append(docs, readDocs(t, f)...)
	}
	managerRole := 0
	for _, d := range docs {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(d, &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal(d, &r); err != nil {
				t.Fatal(err)
			}
			if grants(r.Rules) {
				t.Errorf("ClusterRole %s grants Secrets cluster-wide", head.Metadata.Name)
			}
		case "Role":
			var r rbacv1.Role
			if err := yaml.Unmarshal(d, &r); err != nil {
				t.Fatal(err)
			}
			if head.Metadata.Name == "bulkhead-manager-role" && grants(r.Rules) {
				managerRole++
			}
		case "ClusterServiceVersion":
			var csv operatorsv1alpha1.ClusterServiceVersion
			if err := yaml.Unmarshal(d, &csv); err != nil {
				t.Fatal(err)
			}
			s := csv.Spec.InstallStrategy.StrategySpec
			for _, p := range s.ClusterPermissions {
				if grants(p.Rules) {
					t.Errorf("CSV clusterPermissions of %s grant Secrets cluster-wide", p.ServiceAccountName)
				}
			}
			for _, p := range s.Permissions {
				if grants(p.Rules) {
					managerRole++
				}
			}
		}
	}
	if managerRole < 2 {
		t.Fatalf("the manager's namespaced Secret rights were not found in install.yaml and the CSV (%d)", managerRole)
	}
}
