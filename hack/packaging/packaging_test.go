// Package packaging checks Bulkhead's install artefacts: they are up to date
// with config/, the OLM bundle passes operator-framework/api's validators
// (default, OperatorHub and good-practices suites), the Helm chart passes
// Helm's lint and renders, no shipped RBAC uses wildcards, and the alerts and
// dashboard name only metrics Bulkhead exports.
package packaging

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/hack/packaging/internal/gen"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestGeneratedArtefactsUpToDate regenerates dist/install.yaml, bundle/,
// bundle.Dockerfile and dist/chart in memory and compares them with the
// committed files.
func TestGeneratedArtefactsUpToDate(t *testing.T) {
	root := repoRoot(t)
	files, err := gen.Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := gen.Diff(root, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
	if len(diffs) > 0 {
		t.Log("run `make build-installer bundle helm-chart` and commit the result")
	}
}

// TestDiffDetectsStaleness proves the up-to-date check can fail.
func TestDiffDetectsStaleness(t *testing.T) {
	root := t.TempDir()
	files := gen.Files{"bundle.Dockerfile": []byte("FROM scratch\n"), "dist/chart/Chart.yaml": []byte("name: x\n")}
	if err := gen.Write(root, files); err != nil {
		t.Fatal(err)
	}
	changed := gen.Files{"bundle.Dockerfile": []byte("FROM scratch\nLABEL a=b\n"), "dist/install.yaml": []byte("---\n")}
	diffs, err := gen.Diff(root, changed)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 3 { // changed Dockerfile, missing install.yaml, stale Chart.yaml
		t.Fatalf("want 3 differences, got %q", diffs)
	}
}

// TestProductionOverlayBuilds: the kustomize overlay example builds, lets
// the manager read the credentials Secret by name, and does not also mount
// it as a file (a mounted copy would keep a revoked token alive until the
// kubelet refreshes it).
func TestProductionOverlayBuilds(t *testing.T) {
	out, objs, err := gen.Kustomize(repoRoot(t), "examples/kustomize/production")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- bulkhead-ingest-credentials"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("overlay output lacks %q", want)
		}
	}
	for _, unwanted := range []string{"--ingest-token-file", "secretName: bulkhead-ingest-credentials"} {
		if strings.Contains(string(out), unwanted) {
			t.Errorf("overlay output has %q", unwanted)
		}
	}
	if len(objs) < 20 {
		t.Errorf("overlay renders only %d objects", len(objs))
	}
}
