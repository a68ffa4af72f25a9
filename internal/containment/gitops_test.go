package containment

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestGitOpsWarningNamesTheTool(t *testing.T) {
	cases := []struct {
		name        string
		labels, ann map[string]string
		want        string
	}{
		{"argo tracking annotation", nil, map[string]string{"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:web/shop"}, "Argo CD manages Deployment/shop"},
		{"argo instance label", map[string]string{"argocd.argoproj.io/instance": "shop"}, nil, "Argo CD"},
		{"flux kustomization", map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps"}, nil, "Flux manages Deployment/shop"},
		{"flux helm release", map[string]string{"helm.toolkit.fluxcd.io/name": "shop"}, nil, "Flux"},
		{"argo default label tracking", map[string]string{"app.kubernetes.io/instance": "shop"}, nil, "Argo CD (label tracking: app.kubernetes.io/instance=shop) manages Deployment/shop"},
		{"not managed", map[string]string{"app": "shop"}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &unstructured.Unstructured{}
			w.SetKind("Deployment")
			w.SetName("shop")
			w.SetLabels(tc.labels)
			w.SetAnnotations(tc.ann)
			got := gitOpsWarning(w)
			if tc.want == "" {
				if got != "" {
					t.Fatalf("want no warning, got %q", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) || !strings.Contains(got, "docs/gitops.md") {
				t.Fatalf("warning %q should contain %q and point to docs/gitops.md", got, tc.want)
			}
		})
	}
}
