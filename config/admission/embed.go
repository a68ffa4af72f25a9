// Package admission carries the admission guards (this directory's
// ValidatingAdmissionPolicies and bindings) into the manager binary, so the
// manager can install them where the install path cannot (an OLM bundle
// cannot carry a ValidatingAdmissionPolicy). kustomize and Helm read the same
// files: one source for every path.
package admission

import _ "embed"

//go:embed quarantine_guard.yaml
var quarantineGuard []byte

//go:embed sensor_guard.yaml
var sensorGuard []byte

//go:embed baseline_guard.yaml
var baselineGuard []byte

// Manifests are the guard files, each a multi-document YAML of a policy and
// its binding, with names before the install's prefix.
func Manifests() map[string][]byte {
	return map[string][]byte{"quarantine_guard.yaml": quarantineGuard, "sensor_guard.yaml": sensorGuard, "baseline_guard.yaml": baselineGuard}
}
