package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8s = env.Client
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// validPolicy is the brief's example; each bad case below breaks one thing.
const validPolicy = `
apiVersion: security.bulkhead.dev/v1alpha1
kind: ThreatPolicy
metadata: {name: NAME}
spec:
  mode: Enforce
  selector:
    namespaceSelector: {matchLabels: {tier: web}}
    podSelector: {matchLabels: {app: shop}}
  detectors:
  - {name: behavior, weight: 60}
  - {name: falco, weight: 40}
  scoring:
    threshold: "0.80"
    sustain: 3
  response:
  - minScore: "0.80"
    actions: [{type: Isolate, isolate: {allowDNS: true}}]
  - minScore: "0.95"
    actions: [{type: ScaleToZero}, {type: CordonNode}]
  safeguards:
    maxActiveQuarantines: 10
    cooldown: 10m
  release:
    autoReleaseAfter: 2h
`

const validQuarantine = `
apiVersion: security.bulkhead.dev/v1alpha1
kind: Quarantine
metadata: {name: NAME, namespace: default}
spec:
  target: {kind: Pod, name: shop-1}
  actions: [{type: Isolate}]
`

func decode(t *testing.T, doc, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(doc, "NAME", name)), &u.Object); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	return u
}

// set replaces the value at a dotted path (list indices as numbers).
func set(t *testing.T, u *unstructured.Unstructured, path string, value any) {
	t.Helper()
	var cur any = u.Object
	parts := strings.Split(path, ".")
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				if value == nil {
					delete(c, p)
				} else {
					c[p] = value
				}
				return
			}
			if _, ok := c[p]; !ok {
				c[p] = map[string]any{}
			}
			cur = c[p]
		case []any:
			idx, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("path %s: %v", path, err)
			}
			if last {
				c[idx] = value
				return
			}
			cur = c[idx]
		default:
			t.Fatalf("path %s: cannot descend into %T", path, cur)
		}
	}
}

func yamlValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad yaml value %q: %v", s, err)
	}
	return v
}

type badCase struct {
	name  string
	base  string
	edits map[string]string // dotted path -> YAML value ("~" deletes)
	// want are substrings the API server's message must contain: the field
	// and what to fix.
	want []string
}

func TestInvalidObjectsAreRejectedOnCreate(t *testing.T) {
	cases := []badCase{
		{"policy without mode", validPolicy, map[string]string{"spec.mode": "~"}, []string{"spec.mode", "Required"}},
		{"policy with unknown mode", validPolicy, map[string]string{"spec.mode": "Audit"}, []string{"spec.mode", "Enforce", "DryRun", "RequireApproval"}},
		{"policy without selector", validPolicy, map[string]string{"spec.selector": "~"}, []string{"spec.selector", "Required"}},
		{"policy with empty selector", validPolicy, map[string]string{"spec.selector": "{}"}, []string{"spec.selector", "namespaceSelector, podSelector or both"}},
		{"policy without detectors", validPolicy, map[string]string{"spec.detectors": "[]"}, []string{"spec.detectors", "at least 1"}},
		{"detector weight 0", validPolicy, map[string]string{"spec.detectors.0.weight": "0"}, []string{"spec.detectors[0].weight", "greater than or equal to 1"}},
		{"detector weight 101", validPolicy, map[string]string{"spec.detectors.0.weight": "101"}, []string{"spec.detectors[0].weight", "less than or equal to 100"}},
		{"detector weight as float", validPolicy, map[string]string{"spec.detectors.0.weight": "0.5"}, []string{"spec.detectors[0].weight", "integer"}},
		{"detector name with capitals", validPolicy, map[string]string{"spec.detectors.0.name": "Behavior"}, []string{"spec.detectors[0].name", "should match"}},
		{"duplicate detector", validPolicy, map[string]string{"spec.detectors.1.name": "behavior"}, []string{"spec.detectors[1]", "Duplicate value"}},
		{"threshold as number", validPolicy, map[string]string{"spec.scoring.threshold": "0.8"}, []string{"spec.scoring.threshold", "string"}},
		{"threshold above 1", validPolicy, map[string]string{"spec.scoring.threshold": `"1.5"`}, []string{"spec.scoring.threshold", "should match"}},
		{"threshold negative", validPolicy, map[string]string{"spec.scoring.threshold": `"-0.1"`}, []string{"spec.scoring.threshold", "should match"}},
		{"threshold not a decimal", validPolicy, map[string]string{"spec.scoring.threshold": `"high"`}, []string{"spec.scoring.threshold", "should match"}},
		{"sustain 0", validPolicy, map[string]string{"spec.scoring.sustain": "0"}, []string{"spec.scoring.sustain", "greater than or equal to 1"}},
		{"response steps not increasing", validPolicy, map[string]string{"spec.response.1.minScore": `"0.80"`}, []string{"spec.response", "strictly increasing minScore"}},
		{"response steps decreasing", validPolicy, map[string]string{"spec.response.0.minScore": `"0.97"`}, []string{"spec.response", "response[1].minScore must be greater than response[0].minScore"}},
		{"first step below threshold", validPolicy, map[string]string{"spec.response.0.minScore": `"0.5"`}, []string{"spec", "response[0].minScore must be at least scoring.threshold"}},
		{"step without actions", validPolicy, map[string]string{"spec.response.0.actions": "[]"}, []string{"spec.response[0].actions", "at least 1"}},
		{"unknown action type", validPolicy, map[string]string{"spec.response.0.actions": "[{type: Delete}]"}, []string{"spec.response[0].actions[0].type", "Isolate"}},
		{"isolate block with ScaleToZero", validPolicy, map[string]string{"spec.response.1.actions": "[{type: ScaleToZero, isolate: {allowDNS: true}}]"}, []string{"spec.response[1].actions[0]", "isolate parameters are only allowed with type Isolate"}},
		{"Label without label block", validPolicy, map[string]string{"spec.response.0.actions": "[{type: Label}]"}, []string{"spec.response[0].actions[0]", "type Label requires the label block"}},
		{"Label setting a bulkhead key", validPolicy, map[string]string{"spec.response.0.actions": "[{type: Label, label: {labels: {security.bulkhead.dev/quarantine: x}}}]"}, []string{"spec.response[0].actions[0].label.labels", "security.bulkhead.dev/ prefix"}},
		{"duplicate action type", validPolicy, map[string]string{"spec.response.1.actions": "[{type: ScaleToZero}, {type: ScaleToZero}]"}, []string{"spec.response[1].actions[1]", "Duplicate value"}},
		{"maxActiveQuarantines 0", validPolicy, map[string]string{"spec.safeguards.maxActiveQuarantines": "0"}, []string{"spec.safeguards.maxActiveQuarantines", "greater than or equal to 1"}},
		{"cooldown malformed", validPolicy, map[string]string{"spec.safeguards.cooldown": `"ten minutes"`}, []string{"spec.safeguards.cooldown", "should match"}},
		{"autoReleaseAfter without unit", validPolicy, map[string]string{"spec.release.autoReleaseAfter": `"120"`}, []string{"spec.release.autoReleaseAfter", "should match"}},
		{"releaseWithoutEvidenceAfter shorter than autoReleaseAfter", validPolicy, map[string]string{"spec.release.releaseWithoutEvidenceAfter": `"1h"`}, []string{"spec.release", "releaseWithoutEvidenceAfter needs autoReleaseAfter and must not be shorter"}},
		{"releaseWithoutEvidenceAfter without autoReleaseAfter", validPolicy, map[string]string{"spec.release": `{releaseWithoutEvidenceAfter: "4h"}`}, []string{"spec.release", "releaseWithoutEvidenceAfter needs autoReleaseAfter"}},
		{"namespaceShare 0", validPolicy, map[string]string{"spec.safeguards.namespaceShare": "0"}, []string{"spec.safeguards.namespaceShare", "greater than or equal to 1"}},
		{"namespaceShare above 100", validPolicy, map[string]string{"spec.safeguards.namespaceShare": "101"}, []string{"spec.safeguards.namespaceShare", "less than or equal to 100"}},
		{"maxCordonedNodes negative", validPolicy, map[string]string{"spec.safeguards.maxCordonedNodes": "-1"}, []string{"spec.safeguards.maxCordonedNodes", "greater than or equal to 0"}},
		{"protected namespace invalid", validPolicy, map[string]string{"spec.safeguards.protectedNamespaces": "[Payments]"}, []string{"spec.safeguards.protectedNamespaces[0]", "should match"}},
		{"too many response steps", validPolicy, map[string]string{"spec.response": `[{minScore: "0.8", actions: [{type: Isolate}]}, {minScore: "0.82", actions: [{type: Label, label: {labels: {a: b}}}]}, {minScore: "0.84", actions: [{type: Detach}]}, {minScore: "0.86", actions: [{type: Evict}]}, {minScore: "0.9", actions: [{type: ScaleToZero}]}, {minScore: "0.95", actions: [{type: CordonNode}]}]`}, []string{"spec.response", "must have at most 5 items"}},

		{"quarantine without target", validQuarantine, map[string]string{"spec.target": "~"}, []string{"spec.target", "Required"}},
		{"quarantine target kind unknown", validQuarantine, map[string]string{"spec.target.kind": "DaemonSet"}, []string{"spec.target.kind", "Pod", "Deployment", "StatefulSet"}},
		{"quarantine target name empty", validQuarantine, map[string]string{"spec.target.name": `""`}, []string{"spec.target.name", "at least 1"}},
		{"quarantine without actions", validQuarantine, map[string]string{"spec.actions": "[]"}, []string{"spec.actions", "at least 1"}},
		{"quarantine Detach on a Deployment", validQuarantine, map[string]string{"spec.target.kind": "Deployment", "spec.actions": "[{type: Detach}]"}, []string{"spec", "Detach and Evict act on one pod"}},
		{"quarantine reason score out of range", validQuarantine, map[string]string{"spec.reason": `{score: "1.01"}`}, []string{"spec.reason.score", "should match"}},
		{"quarantine detach onRelease unknown", validQuarantine, map[string]string{"spec.actions": "[{type: Detach, detach: {onRelease: Archive}}]"}, []string{"spec.actions[0].detach.onRelease", "Delete", "Keep"}},
		{"quarantine CordonNode floor negative", validQuarantine, map[string]string{"spec.safeguards": "{minSchedulableNodes: -1}"}, []string{"spec.safeguards.minSchedulableNodes", "greater than or equal to 0"}},
		{"quarantine CordonNode floor above 10000", validQuarantine, map[string]string{"spec.safeguards": "{minSchedulableNodes: 10001}"}, []string{"spec.safeguards.minSchedulableNodes", "less than or equal to 10000"}},
		{"quarantine recommendation without policy", validQuarantine, map[string]string{"spec.recommendations": `[{time: "2026-01-01T00:00:00Z", score: "0.9", actions: [Isolate]}]`}, []string{"spec.recommendations[0].policy", "Required"}},
		{"quarantine name over 63 characters", validQuarantine, map[string]string{"metadata.name": strings.Repeat("q", 64)}, []string{"metadata.name must be at most 63 characters"}},
	}
	if len(cases) < 25 {
		t.Fatalf("the issue asks for at least 25 invalid manifests, have %d", len(cases))
	}
	ctx := context.Background()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := decode(t, tc.base, fmt.Sprintf("bad-%d", i))
			for path, v := range tc.edits {
				if v == "~" {
					set(t, u, path, nil)
				} else {
					set(t, u, path, yamlValue(t, v))
				}
			}
			err := k8s.Create(ctx, u)
			if err == nil {
				t.Fatalf("the API server accepted an invalid object")
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestInvalidTransitionsAreRejectedOnUpdate(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		create map[string]string
		update map[string]string
		want   []string
	}{
		{"target is immutable", nil, map[string]string{"spec.target.name": "other"}, []string{"spec.target", "immutable"}},
		{"approved true to false", map[string]string{"spec.approved": "true"}, map[string]string{"spec.approved": "false"}, []string{"spec.approved", "cannot go from true back to false"}},
		{"released true to false", map[string]string{"spec.released": "true"}, map[string]string{"spec.released": "false"}, []string{"spec.released", "cannot go from true back to false"}},
		{"CordonNode floor lowered", map[string]string{"spec.safeguards": "{minSchedulableNodes: 3}"}, map[string]string{"spec.safeguards.minSchedulableNodes": "2"}, []string{"spec.safeguards.minSchedulableNodes", "can only rise"}},
		{"CordonNode floor removed", map[string]string{"spec.safeguards": "{minSchedulableNodes: 3}"}, map[string]string{"spec.safeguards": "{}"}, []string{"spec.safeguards", "minSchedulableNodes cannot be removed"}},
		{"safeguards removed", map[string]string{"spec.safeguards": "{minSchedulableNodes: 3}"}, map[string]string{"spec.safeguards": "~"}, []string{"spec", "spec.safeguards cannot be removed"}},
		// Issue 14 item 10: removing ScaleToZero left the workload at zero forever.
		{"an action removed", map[string]string{"spec.actions": "[{type: Isolate}, {type: ScaleToZero}]"}, map[string]string{"spec.actions": "[{type: Isolate}]"}, []string{"spec.actions", "may only grow"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := decode(t, validQuarantine, fmt.Sprintf("transition-%d", i))
			for p, v := range tc.create {
				set(t, u, p, yamlValue(t, v))
			}
			if err := k8s.Create(ctx, u); err != nil {
				t.Fatalf("create: %v", err)
			}
			for p, v := range tc.update {
				set(t, u, p, yamlValue(t, v))
			}
			err := k8s.Update(ctx, u)
			if err == nil || !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message does not mention %q:\n%v", w, err)
				}
			}
		})
	}

	// The allowed direction must pass, or the rules above prove nothing.
	u := decode(t, validQuarantine, "approve-later")
	set(t, u, "spec.approved", false)
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatalf("create: %v", err)
	}
	set(t, u, "spec.approved", true)
	set(t, u, "spec.released", true)
	if err := k8s.Update(ctx, u); err != nil {
		t.Fatalf("approving and releasing must be allowed: %v", err)
	}
	// Actions may be added.
	set(t, u, "spec.actions", yamlValue(t, "[{type: Isolate}, {type: Evict}]"))
	if err := k8s.Update(ctx, u); err != nil {
		t.Fatalf("adding an action must be allowed: %v", err)
	}
	// A floor may be set later, and raised.
	for _, floor := range []int64{2, 5} {
		set(t, u, "spec.safeguards", map[string]any{"minSchedulableNodes": floor})
		if err := k8s.Update(ctx, u); err != nil {
			t.Fatalf("setting the CordonNode floor to %d must be allowed: %v", floor, err)
		}
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "web"}}}
	if err := k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	accepted := 0
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := k8s.Create(ctx, u, client.DryRunAll); err != nil {
			t.Errorf("%s rejected: %v", filepath.Base(f), err)
			continue
		}
		accepted++
	}
	if accepted < 4 {
		t.Fatalf("expected at least 4 samples, accepted %d", accepted)
	}
}

func TestQuarantineTargetNameIsASelectableField(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"select-a", "select-b"} {
		u := decode(t, validQuarantine, name)
		set(t, u, "spec.target.name", name+"-pod")
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("security.bulkhead.dev/v1alpha1")
	list.SetKind("QuarantineList")
	if err := k8s.List(ctx, list, client.InNamespace("default"), client.MatchingFields{"spec.target.name": "select-b-pod"}); err != nil {
		t.Fatalf("field selector on spec.target.name: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].GetName() != "select-b" {
		t.Fatalf("want exactly select-b, got %d items", len(list.Items))
	}
}
