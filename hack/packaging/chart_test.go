package packaging

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/bulkhead-dev/bulkhead/hack/packaging/internal/gen"
)

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "dist", "chart") }

// TestChartLint runs Helm's own lint rules (Chart.yaml, values, templates
// rendered against the minimum Kubernetes version, CRDs) and fails on any
// message, informational ones included.
func TestChartLint(t *testing.T) {
	kv, err := common.ParseKubeVersion("v" + gen.MinKubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range map[string]map[string]any{
		"defaults":      nil,
		"everything on": allOn(),
	} {
		res := lint.RunAll(chartDir(t), values, "bulkhead-system", lint.WithKubeVersion(kv))
		for _, m := range res.Messages {
			if m.Severity >= support.InfoSev {
				t.Errorf("helm lint (%s): %s", name, m)
			}
		}
	}
}

func allOn() map[string]any {
	return map[string]any{
		"metrics": map[string]any{
			"serviceMonitor":   map[string]any{"enabled": true},
			"prometheusRule":   map[string]any{"enabled": true},
			"grafanaDashboard": map[string]any{"enabled": true},
		},
		"extraArgs":    []any{"--score-ttl=10m"},
		"ingest":       map[string]any{"credentialsSecret": "sensor-tokens"},
		"nodeSelector": map[string]any{"kubernetes.io/os": "linux"},
	}
}

// render renders the chart like `helm template` into namespace ns.
func render(t *testing.T, values map[string]any, ns string) map[string][]map[string]any {
	t.Helper()
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatal(err)
	}
	caps := common.DefaultCapabilities.Copy()
	vals, err := chartutil.ToRenderValues(ch, values, common.ReleaseOptions{Name: "bulkhead", Namespace: ns, IsInstall: true}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	byKind := map[string][]map[string]any{}
	for name, doc := range out {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(doc)), 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s does not render to YAML: %v\n%s", name, err, doc)
			}
			if obj == nil {
				continue
			}
			kind, _ := obj["kind"].(string)
			byKind[kind] = append(byKind[kind], obj)
		}
	}
	return byKind
}

// TestChartRendersDefaults: the default values render the manager, its RBAC,
// Services, NetworkPolicy and the admission policy into the release
// namespace, and no Prometheus objects.
func TestChartRendersDefaults(t *testing.T) {
	objs := render(t, nil, "security")
	for kind, n := range map[string]int{
		// The manager's and the node sensor's accounts; the sensor's switch.
		"Deployment": 1, "ServiceAccount": 2, "Service": 2, "NetworkPolicy": 1,
		// The quarantine guard, the sensor guard and the baseline guard.
		"ValidatingAdmissionPolicy": 3, "ValidatingAdmissionPolicyBinding": 3,
		"ServiceMonitor": 0, "PrometheusRule": 0, "ConfigMap": 1, "Namespace": 0,
	} {
		if got := len(objs[kind]); got != n {
			t.Errorf("%d %s rendered, want %d", got, kind, n)
		}
	}
	// The manager's own roles are generated from code markers; the people
	// roles are fixed: at least these.
	for kind, n := range map[string]int{"ClusterRole": 6, "ClusterRoleBinding": 2, "Role": 2, "RoleBinding": 1} {
		if got := len(objs[kind]); got < n {
			t.Errorf("%d %s rendered, want at least %d", got, kind, n)
		}
	}
	dep := objs["Deployment"][0]
	c := dig(dep, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	if img := c["image"]; img != gen.Image+":v"+gen.Version {
		t.Errorf("image %v, want %s:v%s", img, gen.Image, gen.Version)
	}
	if ns := dig(dep, "metadata", "namespace"); ns != "security" {
		t.Errorf("Deployment namespace %v, want the release namespace", ns)
	}
	if got := dig(dep, "metadata", "labels", "app.kubernetes.io/instance"); got != "bulkhead" {
		t.Errorf("Helm labels missing: app.kubernetes.io/instance=%v", got)
	}
	// The guards name no namespace (issue 14 item 5): the quarantine guard
	// recognises the manager by a verb only its ClusterRole grants, the
	// sensor guard the sensor by request.namespace, so they hold in any
	// release namespace and when the manager installs them itself (OLM).
	guards := 0
	for _, vap := range objs["ValidatingAdmissionPolicy"] {
		guards++
		conds, _ := dig(vap, "spec", "matchConditions").([]any)
		for _, mc := range conds {
			e := mc.(map[string]any)["expression"].(string)
			if strings.Contains(e, "system:serviceaccount:security:") || strings.Contains(e, "system:serviceaccount:bulkhead-system:") {
				t.Errorf("%v names a namespace in its match conditions: %s", dig(vap, "metadata", "name"), e)
			}
		}
	}
	if guards != 3 {
		t.Errorf("%d admission policies rendered, want the quarantine, sensor and baseline guards", guards)
	}
	for _, b := range append(objs["ClusterRoleBinding"], objs["RoleBinding"]...) {
		for _, s := range b["subjects"].([]any) {
			if ns := s.(map[string]any)["namespace"]; ns != "security" {
				t.Errorf("%v binds a ServiceAccount in %v, want the release namespace", dig(b, "metadata", "name"), ns)
			}
		}
	}
}

// TestChartRendersEverythingOn: optional parts render, and Prometheus
// template syntax in alert annotations and the dashboard survives Helm.
func TestChartRendersEverythingOn(t *testing.T) {
	objs := render(t, allOn(), "bulkhead-system")
	// ConfigMaps: the Grafana dashboard and the sensor switch.
	for kind, n := range map[string]int{"ServiceMonitor": 1, "PrometheusRule": 1, "ConfigMap": 2} {
		if len(objs[kind]) != n {
			t.Fatalf("%d %s rendered, want %d", len(objs[kind]), kind, n)
		}
	}
	rule := objs["PrometheusRule"][0]
	if s := stringOf(rule); !strings.Contains(s, "{{ $labels.policy }}") {
		t.Error("PrometheusRule annotations lost their {{ $labels }} templates")
	}
	var dashboard map[string]any
	for _, cm := range objs["ConfigMap"] {
		if strings.Contains(stringOf(dig(cm, "metadata", "name")), "dashboard") || strings.Contains(stringOf(cm), "panels") {
			dashboard = cm
		}
	}
	if s := stringOf(dashboard); !strings.Contains(s, "{{phase}}") {
		t.Error("the dashboard lost its {{phase}} legends")
	}
	c := dig(objs["Deployment"][0], "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	args := c["args"].([]any)
	if args[len(args)-1] != "--score-ttl=10m" || args[len(args)-2] != "--ingest-token-file=/etc/bulkhead/ingest/tokens" {
		t.Errorf("extraArgs or the credentials flag not appended: %v", args)
	}
	if s := stringOf(dig(objs["Deployment"][0], "spec", "template", "spec", "volumes")); !strings.Contains(s, "sensor-tokens") {
		t.Errorf("the credentials Secret is not mounted: %s", s)
	}
}

func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func stringOf(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		case string:
			b.WriteString(t)
			b.WriteString("\n")
		}
	}
	walk(v)
	return b.String()
}

// TestChartLintCatchesProblems proves TestChartLint can fail: a Chart.yaml
// without a version, a template that does not parse and a value of the wrong
// type (values.schema.json) are each reported as errors.
func TestChartLintCatchesProblems(t *testing.T) {
	files, err := gen.Generate(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		file   string
		mutate func(string) string
		values map[string]any
		want   string
	}{
		{"Chart.yaml without version", "Chart.yaml", func(s string) string { return strings.Replace(s, "\nversion: ", "\nversionRemoved: ", 1) }, nil, "version is required"},
		{"template that does not parse", "templates/deployment-controller-manager.yaml", func(s string) string { return s + "{{ .Values.missing.field }\n" }, nil, "templates/"},
		{"value of the wrong type", "", nil, map[string]any{"replicaCount": "two"}, "/replicaCount"},
	} {
		tmp := t.TempDir()
		broken := gen.Files{}
		for p, data := range files {
			if !strings.HasPrefix(p, "dist/chart/") {
				continue
			}
			if tc.file != "" && p == "dist/chart/"+tc.file {
				data = []byte(tc.mutate(string(data)))
			}
			broken[p] = data
		}
		if err := gen.Write(tmp, broken); err != nil {
			t.Fatal(err)
		}
		res := lint.RunAll(filepath.Join(tmp, "dist", "chart"), tc.values, "bulkhead-system")
		found := false
		for _, m := range res.Messages {
			if m.Severity == support.ErrorSev && strings.Contains(m.Error(), tc.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no lint error mentioning %q in %v", tc.name, tc.want, res.Messages)
		}
	}
}
