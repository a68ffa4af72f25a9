package install

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// sampleFiles are every YAML manifest users are told to apply: the samples,
// the GitOps examples and the Prometheus objects. Kustomization files are
// inputs to kustomize, not objects.
func sampleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"config/samples", "examples", "config/prometheus"} {
		err := filepath.WalkDir(repoPath(dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			yamlFile := strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
			if d.IsDir() || name == "kustomization.yaml" || !yamlFile {
				return nil
			}
			files = append(files, path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// dryRunCreate asks the API server to validate obj (schema, CEL rules,
// admission) without persisting it.
func dryRunCreate(t *testing.T, obj *unstructured.Unstructured) error {
	t.Helper()
	mapping, err := env.Client.RESTMapper().RESTMapping(obj.GroupVersionKind().GroupKind(), obj.GroupVersionKind().Version)
	if err != nil {
		return err
	}
	if mapping.Scope.Name() == "namespace" {
		ns := obj.GetNamespace()
		if ns == "" || ns == "system" { // "system" is kustomize's placeholder
			ns = "samples"
			obj.SetNamespace(ns)
		}
		err := env.Client.Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return env.Client.Create(ctx(t), obj, client.DryRunAll)
}

// TestSamplesPassServerSideValidation: every object in config/samples,
// examples/ and config/prometheus is accepted by a real API server with
// Bulkhead's CRDs (and Argo CD's, Flux's and the Prometheus Operator's).
func TestSamplesPassServerSideValidation(t *testing.T) {
	files := sampleFiles(t)
	count := 0
	for _, f := range files {
		rel, _ := filepath.Rel(repoPath(), f)
		for _, obj := range readObjects(t, f) {
			count++
			if err := dryRunCreate(t, obj); err != nil {
				t.Errorf("%s: %s %s rejected: %v", rel, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
	if count < 15 {
		t.Fatalf("only %d sample objects found in %d files", count, len(files))
	}
	t.Logf("%d objects in %d files validated", count, len(files))
}

// TestInvalidSampleIsRejected proves the validation above can fail: a policy
// with a threshold above 1 and a Quarantine with Evict on a Deployment.
func TestInvalidSampleIsRejected(t *testing.T) {
	for _, doc := range []string{`
apiVersion: security.bulkhead.dev/v1alpha1
kind: ThreatPolicy
metadata: {name: bad-threshold}
spec:
  mode: Enforce
  selector: {podSelector: {}}
  detectors: [{name: behavior, weight: 10}]
  scoring: {threshold: "1.5"}
  response: [{minScore: "1.5", actions: [{type: Isolate}]}]
`, `
apiVersion: security.bulkhead.dev/v1alpha1
kind: Quarantine
metadata: {name: bad-evict, namespace: samples}
spec:
  target: {kind: Deployment, name: shop}
  actions: [{type: Evict}]
`} {
		objs := decodeObjects(t, "inline", []byte(doc))
		if err := dryRunCreate(t, objs[0]); err == nil {
			t.Errorf("%s %s was accepted", objs[0].GetKind(), objs[0].GetName())
		}
	}
}
