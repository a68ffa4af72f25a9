package framework

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestRepoRootHoldsTheModule(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "module github.com/bulkhead-dev/bulkhead\n") {
		t.Fatalf("%s/go.mod is not Bulkhead's", RepoRoot())
	}
}

func TestWaitUntil(t *testing.T) {
	ctx := context.Background()
	n := 0
	err := Wait{What: "third try", Timeout: 5 * time.Second, Every: time.Millisecond}.Until(ctx, func(context.Context) error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("err %v after %d checks, want nil after 3", err, n)
	}

	err = Wait{What: "never", Timeout: 20 * time.Millisecond, Every: time.Millisecond}.Until(ctx, func(context.Context) error {
		return errors.New("still no")
	})
	if err == nil || err.Error() != "never: not after 20ms: still no" {
		t.Fatalf("timeout error %v", err)
	}

	gone := errors.New("process exited")
	n = 0
	err = Wait{What: "ready", Timeout: 5 * time.Second, Every: time.Millisecond}.Until(ctx, func(context.Context) error {
		n++
		return Permanent(gone)
	})
	if err != gone || n != 1 {
		t.Fatalf("permanent: err %v after %d checks, want the error itself after 1", err, n)
	}
}

// The rendered YAML is a valid ThreatPolicy carrying every field set.
func TestPolicyYAML(t *testing.T) {
	p := Policy{
		Name: "p", Mode: "DryRun",
		NamespaceLabels: map[string]string{"tier": "web", "e2e.bulkhead.dev/scenario": "ns-1"},
		PodLabels:       map[string]string{"app": "shop"},
		Detectors:       []Detector{{Name: "behavior", Weight: 60}, {Name: "falco", Weight: 40}},
		Threshold:       "0.7", Sustain: 3,
		Response: []Step{
			{MinScore: "0.7", Actions: "[{type: Isolate, isolate: {allowDNS: true}}]"},
			{MinScore: "0.9", Actions: "[{type: ScaleToZero}, {type: CordonNode}]"},
		},
		MaxActiveQuarantines: 10, MinSchedulableNodes: 1, Cooldown: "1s", ProtectedNamespaces: []string{"payments", "db"},
	}
	var tp securityv1alpha1.ThreatPolicy
	if err := yaml.UnmarshalStrict([]byte(p.YAML()), &tp); err != nil {
		t.Fatalf("%v\n%s", err, p.YAML())
	}
	s := tp.Spec
	if tp.Name != "p" || s.Mode != securityv1alpha1.ModeDryRun || s.Selector.NamespaceSelector.MatchLabels["e2e.bulkhead.dev/scenario"] != "ns-1" ||
		s.Selector.PodSelector.MatchLabels["app"] != "shop" || len(s.Detectors) != 2 || s.Detectors[1].Name != "falco" {
		t.Errorf("metadata, mode, selector or detectors lost: %+v", tp)
	}
	if len(s.Response) != 2 || len(s.Response[1].Actions) != 2 || s.Response[1].Actions[1].Type != securityv1alpha1.ActionCordonNode ||
		s.Response[0].Actions[0].Isolate == nil || !s.Response[0].Actions[0].Isolate.AllowDNS {
		t.Errorf("response lost: %+v", s.Response)
	}
	if len(s.Safeguards.ProtectedNamespaces) != 2 || s.Safeguards.Cooldown == nil {
		t.Errorf("safeguards lost: %+v", s.Safeguards)
	}
	if got := Policies(p, p); strings.Count(got, "kind: ThreatPolicy") != 2 || !strings.Contains(got, "\n---\n") {
		t.Errorf("Policies does not join two documents:\n%s", got)
	}
	if def := (Policy{Name: "d"}).YAML(); !strings.Contains(def, "mode: Enforce") || !strings.Contains(def, `threshold: "0.80"`) {
		t.Errorf("defaults missing:\n%s", def)
	}
}
