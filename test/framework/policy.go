package framework

import (
	"fmt"
	"sort"
	"strings"
)

// Policy is a ThreatPolicy rendered as YAML for kubectl apply, as a user or
// a GitOps tool writes one. Zero fields are left out.
type Policy struct {
	Name string
	// Mode: Enforce (default), DryRun or RequireApproval.
	Mode string
	// NamespaceLabels and PodLabels are the selector's matchLabels.
	NamespaceLabels map[string]string
	PodLabels       map[string]string
	Detectors       []Detector
	// Threshold of the weighted score. Default "0.80".
	Threshold string
	Sustain   int
	Response  []Step
	// Safeguards.
	MaxActiveQuarantines int
	MinSchedulableNodes  int
	Cooldown             string
	ProtectedNamespaces  []string

	// NamespaceShare is safeguards.namespaceShare (percent; 0: the default).
	NamespaceShare int
}

// Detector is a weighted detector of a policy.
type Detector struct {
	Name   string
	Weight int
}

// Step is a response step: Actions is a YAML flow sequence such as
// `[{type: Isolate, isolate: {allowDNS: true}}]`.
type Step struct {
	MinScore string
	Actions  string
}

// YAML renders the policy.
func (p Policy) YAML() string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	mode := p.Mode
	if mode == "" {
		mode = "Enforce"
	}
	threshold := p.Threshold
	if threshold == "" {
		threshold = "0.80"
	}
	line("apiVersion: security.bulkhead.dev/v1alpha1")
	line("kind: ThreatPolicy")
	line("metadata: {name: %s}", p.Name)
	line("spec:")
	line("  mode: %s", mode)
	line("  selector:")
	if len(p.NamespaceLabels) > 0 {
		line("    namespaceSelector: {matchLabels: %s}", flowMap(p.NamespaceLabels))
	}
	if len(p.PodLabels) > 0 {
		line("    podSelector: {matchLabels: %s}", flowMap(p.PodLabels))
	}
	line("  detectors:")
	for _, d := range p.Detectors {
		line("  - {name: %s, weight: %d}", d.Name, d.Weight)
	}
	line("  scoring:")
	line("    threshold: %q", threshold)
	if p.Sustain > 0 {
		line("    sustain: %d", p.Sustain)
	}
	line("  response:")
	for _, s := range p.Response {
		line("  - minScore: %q", s.MinScore)
		line("    actions: %s", s.Actions)
	}
	if p.MaxActiveQuarantines > 0 || p.NamespaceShare > 0 || p.MinSchedulableNodes > 0 || p.Cooldown != "" || len(p.ProtectedNamespaces) > 0 {
		line("  safeguards:")
		if p.MaxActiveQuarantines > 0 {
			line("    maxActiveQuarantines: %d", p.MaxActiveQuarantines)
		}
		if p.NamespaceShare > 0 {
			line("    namespaceShare: %d", p.NamespaceShare)
		}
		if p.MinSchedulableNodes > 0 {
			line("    minSchedulableNodes: %d", p.MinSchedulableNodes)
		}
		if p.Cooldown != "" {
			line("    cooldown: %s", p.Cooldown)
		}
		if len(p.ProtectedNamespaces) > 0 {
			line("    protectedNamespaces: [%s]", strings.Join(p.ProtectedNamespaces, ", "))
		}
	}
	return b.String()
}

// Policies joins policies into one multi-document YAML.
func Policies(ps ...Policy) string {
	docs := make([]string, len(ps))
	for i, p := range ps {
		docs[i] = p.YAML()
	}
	return strings.Join(docs, "---\n")
}

func flowMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + m[k]
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
