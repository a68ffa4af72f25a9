package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// namespacedKinds are the bundle manifests OLM creates in the install
// namespace.
var namespacedKinds = []string{"Service", "ConfigMap", "Secret", "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"}

// InstallBundle installs Bulkhead the way OLM does from the rendered bundle
// (bundle/manifests) into namespace: the CRDs; the CSV's ServiceAccounts,
// clusterPermissions (ClusterRole + ClusterRoleBinding) and permissions
// (Role + RoleBinding in namespace); the other manifests, namespaced ones in
// namespace. The CSV's deployment is not created (the manager runs as a
// process, StartManager); its arguments are ManagerArgs, unedited.
func (c *Cluster) InstallBundle(ctx context.Context, repoRoot, namespace string) (*Install, error) {
	dir := filepath.Join(repoRoot, "bundle", "manifests")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no bundle manifests in %s (make bundle): %v", dir, err)
	}
	inst := &Install{Namespace: namespace}
	var out bytes.Buffer
	add := func(obj map[string]any) error {
		doc, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		u := unstructured.Unstructured{Object: obj}
		inst.Applied = append(inst.Applied, u.GetKind()+"/"+u.GetName())
		out.WriteString("---\n")
		out.Write(doc)
		return nil
	}
	if err := add(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}}); err != nil {
		return nil, err
	}
	var crds []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		switch kind := u.GetKind(); {
		case kind == "ClusterServiceVersion":
			if err := inst.fromCSV(&u, add); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			continue
		case kind == "CustomResourceDefinition":
			crds = append(crds, "crd/"+u.GetName())
		case slices.Contains(namespacedKinds, kind):
			u.SetNamespace(namespace)
		}
		if err := add(u.Object); err != nil {
			return nil, err
		}
	}
	if inst.ServiceAccount == "" {
		return nil, fmt.Errorf("the bundle's CSV has no deployment with a ServiceAccount")
	}
	if _, err := c.Kubectl(ctx, &out, "apply", "--server-side", "--field-manager=olm-emulation", "-f", "-"); err != nil {
		return nil, err
	}
	if _, err := c.Kubectl(ctx, nil, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, crds...)...); err != nil {
		return nil, err
	}
	return inst, nil
}

// fromCSV adds what OLM makes of the CSV's install strategy and takes the
// manager's arguments from its deployment.
func (inst *Install) fromCSV(csv *unstructured.Unstructured, add func(map[string]any) error) error {
	ns := inst.Namespace
	accounts := map[string]bool{}
	perms := func(field string, cluster bool) error {
		list, _, err := unstructured.NestedSlice(csv.Object, "spec", "install", "spec", field)
		if err != nil {
			return err
		}
		for i, p := range list {
			pm, _ := p.(map[string]any)
			sa, _ := pm["serviceAccountName"].(string)
			accounts[sa] = true
			name := fmt.Sprintf("%s-%s-%d", csv.GetName(), sa, i)
			role := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
				"metadata": map[string]any{"name": name, "namespace": ns}, "rules": pm["rules"]}
			binding := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
				"metadata": map[string]any{"name": name, "namespace": ns},
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
				"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": ns}}}
			if cluster {
				role["kind"], binding["kind"] = "ClusterRole", "ClusterRoleBinding"
				delete(role["metadata"].(map[string]any), "namespace")
				delete(binding["metadata"].(map[string]any), "namespace")
				binding["roleRef"].(map[string]any)["kind"] = "ClusterRole"
			}
			if err := add(role); err != nil {
				return err
			}
			if err := add(binding); err != nil {
				return err
			}
		}
		return nil
	}
	if err := perms("clusterPermissions", true); err != nil {
		return err
	}
	if err := perms("permissions", false); err != nil {
		return err
	}
	for sa := range accounts {
		if err := add(map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": sa, "namespace": ns}}); err != nil {
			return err
		}
	}
	deps, _, err := unstructured.NestedSlice(csv.Object, "spec", "install", "spec", "deployments")
	if err != nil || len(deps) != 1 {
		return fmt.Errorf("want one deployment in the CSV, got %d (%v)", len(deps), err)
	}
	dm, _ := deps[0].(map[string]any)
	name, _ := dm["name"].(string)
	d := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": dm["spec"]}}
	if err := inst.fromDeployment(d); err != nil {
		return err
	}
	if !accounts[inst.ServiceAccount] {
		return fmt.Errorf("the deployment's ServiceAccount %s has no permissions in the CSV", inst.ServiceAccount)
	}
	if strings.Contains(strings.Join(inst.ManagerArgs, " "), "$(") {
		return fmt.Errorf("unexpanded variable in the CSV's arguments: %v", inst.ManagerArgs)
	}
	return nil
}
