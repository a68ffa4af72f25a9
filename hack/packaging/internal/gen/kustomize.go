// Package gen renders Bulkhead's install artefacts from config/: the
// single-file installer (dist/install.yaml), the OLM bundle (bundle/ and
// bundle.Dockerfile) and the Helm chart (dist/chart). Everything is a pure
// function of the repository's files, so a test can regenerate and compare.
package gen

import (
	"fmt"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered Kubernetes object.
type Object map[string]any

func (o Object) Kind() string { s, _ := o["kind"].(string); return s }

func (o Object) APIVersion() string { s, _ := o["apiVersion"].(string); return s }

func (o Object) meta() map[string]any { m, _ := o["metadata"].(map[string]any); return m }

func (o Object) Name() string { s, _ := o.meta()["name"].(string); return s }

func (o Object) Namespace() string { s, _ := o.meta()["namespace"].(string); return s }

// Kustomize builds a kustomization directory (relative to root) with the
// kustomize API pinned in go.mod (the same as the kustomize CLI of that version).
func Kustomize(root, dir string) ([]byte, []Object, error) {
	return kustomize(root, dir, krusty.ReorderOptionLegacy) // as the kustomize CLI does
}

func kustomize(root, dir string, reorder krusty.ReorderOption) ([]byte, []Object, error) {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = reorder
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, dir))
	if err != nil {
		return nil, nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, nil, err
	}
	var objs []Object
	for _, r := range m.Resources() {
		mp, err := r.Map()
		if err != nil {
			return nil, nil, err
		}
		objs = append(objs, Object(mp))
	}
	return out, objs, nil
}

// toYAML marshals v as YAML (keys sorted, as kubectl prints them).
func toYAML(v any) ([]byte, error) { return yaml.Marshal(v) }
