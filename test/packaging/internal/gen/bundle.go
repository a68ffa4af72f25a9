package gen

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/lib/version"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const serviceAccount = "bulkhead-controller-manager"

// bundleAnnotations are both bundle/metadata/annotations.yaml and the
// bundle image's labels.
var bundleAnnotations = [][2]string{
	{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
	{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
	{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
	{"operators.operatorframework.io.bundle.package.v1", Package},
	{"operators.operatorframework.io.bundle.channels.v1", Channel},
	{"operators.operatorframework.io.bundle.channel.default.v1", Channel},
}

// bundleKinds are the kinds of config/default that OLM can install from a
// bundle besides the CSV's own deployment and permissions. Namespace,
// ServiceAccount (OLM makes it from the CSV) and ValidatingAdmissionPolicy
// (not supported by OLM) stay out; docs/install.md says how to add the policy.
var bundleKinds = map[string]bool{
	"CustomResourceDefinition": true, "Service": true, "ClusterRole": true, "Role": true,
	"NetworkPolicy": true,
}

func bundle(root string, objs, samples []Object, files Files) error {
	csv, err := csvBase(root)
	if err != nil {
		return err
	}
	image := Image + ":v" + Version
	csv.Name = Package + ".v" + Version
	csv.Spec.Version = version.OperatorVersion{Version: semver.MustParse(Version)}
	csv.Annotations["containerImage"] = image
	csv.Spec.RelatedImages = []operatorsv1alpha1.RelatedImage{{Name: "bulkhead", Image: image}}
	icon, err := os.ReadFile(filepath.Join(root, "config/manifests/icon.svg"))
	if err != nil {
		return err
	}
	csv.Spec.Icon = []operatorsv1alpha1.Icon{{Data: base64.StdEncoding.EncodeToString(icon), MediaType: "image/svg+xml"}}

	examples, err := json.MarshalIndent(almExamples(samples), "", "  ")
	if err != nil {
		return err
	}
	csv.Annotations["alm-examples"] = string(examples)

	roles := map[string][]rbacv1.PolicyRule{} // kind/name → rules
	var clusterRoles, nsRoles []string        // bound to the manager's ServiceAccount
	strategy := operatorsv1alpha1.StrategyDetailsDeployment{}
	crdVersions := map[string]string{}
	for _, o := range objs {
		switch o.Kind() {
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole
			if err := convert(o, &r); err != nil {
				return err
			}
			roles[o.Kind()+"/"+o.Name()] = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			if err := convert(o, &b); err != nil {
				return err
			}
			if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != serviceAccount {
				return fmt.Errorf("%s %s: only bindings to the manager's ServiceAccount can go into a CSV", o.Kind(), o.Name())
			}
			if o.Kind() == "ClusterRoleBinding" {
				clusterRoles = append(clusterRoles, b.RoleRef.Kind+"/"+b.RoleRef.Name)
			} else {
				nsRoles = append(nsRoles, b.RoleRef.Kind+"/"+b.RoleRef.Name)
			}
		case "Deployment":
			var d appsv1.Deployment
			if err := convert(o, &d); err != nil {
				return err
			}
			strategy.DeploymentSpecs = append(strategy.DeploymentSpecs, operatorsv1alpha1.StrategyDeploymentSpec{
				Name: d.Name, Spec: d.Spec, Label: d.Labels,
			})
		case "CustomResourceDefinition":
			spec, _ := o["spec"].(map[string]any)
			vs, _ := spec["versions"].([]any)
			for _, v := range vs {
				if vm, _ := v.(map[string]any); vm["storage"] == true {
					crdVersions[o.Name()], _ = vm["name"].(string)
				}
			}
		}
		if bundleKinds[o.Kind()] {
			if err := bundleManifest(o, files); err != nil {
				return err
			}
		}
	}
	permissions := func(refs []string) ([]operatorsv1alpha1.StrategyDeploymentPermissions, error) {
		if len(refs) == 0 {
			return nil, nil
		}
		p := operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: serviceAccount}
		for _, ref := range refs {
			rules, ok := roles[ref]
			if !ok {
				return nil, fmt.Errorf("binding to %s, which config/default does not define", ref)
			}
			p.Rules = append(p.Rules, rules...)
		}
		return []operatorsv1alpha1.StrategyDeploymentPermissions{p}, nil
	}
	if strategy.ClusterPermissions, err = permissions(clusterRoles); err != nil {
		return err
	}
	if strategy.Permissions, err = permissions(nsRoles); err != nil {
		return err
	}
	// Roles bound to the manager live in the CSV, not as separate manifests.
	for _, ref := range append(clusterRoles, nsRoles...) {
		kind, name, _ := strings.Cut(ref, "/")
		delete(files, manifestPath(name, "rbac.authorization.k8s.io/v1", kind))
	}
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{
		StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment, StrategySpec: strategy,
	}
	for i, owned := range csv.Spec.CustomResourceDefinitions.Owned {
		v, ok := crdVersions[owned.Name]
		if !ok {
			return fmt.Errorf("the CSV base owns %s, which config/default does not install", owned.Name)
		}
		csv.Spec.CustomResourceDefinitions.Owned[i].Version = v
		delete(crdVersions, owned.Name)
	}
	for name := range crdVersions {
		return fmt.Errorf("CRD %s is installed but not listed as owned in config/manifests/bases", name)
	}

	out, err := marshalClean(csv)
	if err != nil {
		return err
	}
	files["bundle/manifests/"+Package+".clusterserviceversion.yaml"] = out

	var ann strings.Builder
	ann.WriteString("annotations:\n")
	docker := strings.Builder{}
	docker.WriteString("# Generated by `make bundle` from config/. DO NOT EDIT.\nFROM scratch\n\n")
	for _, kv := range bundleAnnotations {
		fmt.Fprintf(&ann, "  %s: %s\n", kv[0], kv[1])
		fmt.Fprintf(&docker, "LABEL %s=%s\n", kv[0], kv[1])
	}
	docker.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\n")
	files["bundle/metadata/annotations.yaml"] = []byte(ann.String())
	files["bundle.Dockerfile"] = []byte(docker.String())
	return nil
}

func csvBase(root string) (*operatorsv1alpha1.ClusterServiceVersion, error) {
	data, err := os.ReadFile(filepath.Join(root, "config/manifests/bases", Package+".clusterserviceversion.yaml"))
	if err != nil {
		return nil, err
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	if err := yaml.UnmarshalStrict(data, csv); err != nil {
		return nil, fmt.Errorf("config/manifests/bases: %w", err)
	}
	return csv, nil
}

// almExamples are the samples the OperatorHub UI offers, one per kind first.
func almExamples(samples []Object) []Object {
	var out []Object
	seen := map[string]bool{}
	for _, s := range samples {
		if seen[s.Kind()] {
			continue
		}
		seen[s.Kind()] = true
		c := Object{}
		for k, v := range s {
			c[k] = v
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Kind() > out[j].Kind() }) // ThreatPolicy first
	return out
}

func bundleManifest(o Object, files Files) error {
	c := deepCopy(o)
	delete(c.meta(), "namespace")
	out, err := marshalClean(c)
	if err != nil {
		return err
	}
	if o.Kind() == "CustomResourceDefinition" {
		files["bundle/manifests/"+o.Name()+".yaml"] = out
		return nil
	}
	files[manifestPath(o.Name(), o.APIVersion(), o.Kind())] = out
	return nil
}

// manifestPath follows operator-sdk's naming: <name>_<group>_<version>_<kind>.yaml.
func manifestPath(name, apiVersion, kind string) string {
	gv := strings.ReplaceAll(apiVersion, "/", "_")
	return "bundle/manifests/" + strings.ToLower(name+"_"+gv+"_"+kind) + ".yaml"
}

// convert turns an object into a typed value through JSON.
func convert(o Object, into any) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}

func deepCopy(o Object) Object {
	var c Object
	_ = convert(o, &c)
	return c
}

// marshalClean marshals v as YAML without empty status and null timestamps.
func marshalClean(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if st, ok := m["status"].(map[string]any); ok && len(st) == 0 {
		delete(m, "status")
	}
	dropNulls(m)
	return yaml.Marshal(m)
}

func dropNulls(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if x == nil {
				delete(t, k)
				continue
			}
			if xm, ok := x.(map[string]any); ok && len(xm) == 0 && (k == "resources" || k == "strategy" || k == "metadata") {
				delete(t, k)
				continue
			}
			dropNulls(x)
		}
	case []any:
		for _, x := range t {
			dropNulls(x)
		}
	}
}
