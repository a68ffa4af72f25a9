package packaging

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// parsePromQL parses expr as Prometheus would; Grafana's variables are
// replaced by values of the right kind first.
func parsePromQL(expr string) error {
	expr = strings.NewReplacer("$__rate_interval", "5m", "$detector", ".*").Replace(expr)
	_, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	return err
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }

var (
	reMetricDef = regexp.MustCompile(`prometheus\.New(\w+?)(?:Vec)?\(prometheus\.\w+Opts\{\s*Name:\s*"(bulkhead_[a-z0-9_]+)"`)
	reMetricUse = regexp.MustCompile(`\bbulkhead_[a-z0-9_]+`)
)

// exportedMetrics reads internal/metrics/metrics.go (the product's list of
// metric names) without importing the manager's module: name → type.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "internal", "metrics", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range reMetricDef.FindAllStringSubmatch(string(src), -1) {
		out[m[2]] = m[1]
	}
	if len(out) < 5 {
		t.Fatalf("found only %d metrics in internal/metrics/metrics.go: %v", len(out), out)
	}
	return out
}

// unknownMetrics returns the bulkhead_* series text names that Bulkhead does not export.
func unknownMetrics(text string, exported map[string]string) []string {
	var bad []string
	for _, name := range reMetricUse.FindAllString(text, -1) {
		if _, ok := exported[name]; ok {
			continue
		}
		ok := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, cut := strings.CutSuffix(name, suffix); cut && exported[base] == "Histogram" {
				ok = true
			}
		}
		if !ok {
			bad = append(bad, name)
		}
	}
	return bad
}

// TestAlertsAndDashboardUseExportedMetrics: the four product alerts exist,
// and every bulkhead_* series in them and in the Grafana dashboard is one
// Bulkhead exports (histograms with their _bucket/_sum/_count series).
func TestAlertsAndDashboardUseExportedMetrics(t *testing.T) {
	root := repoRoot(t)
	exported := exportedMetrics(t)

	data, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert       string            `json:"alert"`
					Expr        string            `json:"expr"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &rule); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if !strings.Contains(r.Expr, "bulkhead_") {
				t.Errorf("alert %s does not use a Bulkhead metric: %s", r.Alert, r.Expr)
			}
			for _, bad := range unknownMetrics(r.Expr, exported) {
				t.Errorf("alert %s uses %s, which internal/metrics does not export", r.Alert, bad)
			}
			if err := parsePromQL(r.Expr); err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			if r.Annotations["runbook_url"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s needs summary and runbook_url annotations", r.Alert)
			}
		}
	}
	for _, want := range []string{"ContainmentFailed", "BudgetExhausted", "DetectorSilent", "IsolationIneffective"} {
		if !alerts[want] {
			t.Errorf("PrometheusRule has no %s alert", want)
		}
	}

	dash, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "grafana", "bulkhead.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := yaml.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, bad := range unknownMetrics(tg.Expr, exported) {
				t.Errorf("dashboard panel %q uses %s, which internal/metrics does not export", p.Title, bad)
			}
			if err := parsePromQL(tg.Expr); err != nil {
				t.Errorf("dashboard panel %q: %v", p.Title, err)
			}
			for _, n := range reMetricUse.FindAllString(tg.Expr, -1) {
				used[strings.TrimSuffix(n, "_bucket")] = true
			}
		}
	}
	for name := range exported {
		if !used[name] {
			t.Errorf("the dashboard shows nothing of %s", name)
		}
	}
}

func TestBadPromQLIsFound(t *testing.T) {
	if err := parsePromQL(`sum by (x) (rate(bulkhead_a[$__rate_interval])`); err == nil {
		t.Fatal("an unbalanced expression parsed")
	}
}

func TestUnknownMetricsAreFound(t *testing.T) {
	exported := map[string]string{"bulkhead_a": "Counter", "bulkhead_h": "Histogram"}
	got := unknownMetrics(`rate(bulkhead_a[5m]) + bulkhead_h_bucket + bulkhead_a_bucket + bulkhead_typo`, exported)
	if strings.Join(got, ",") != "bulkhead_a_bucket,bulkhead_typo" {
		t.Fatalf("got %v", got)
	}
}
