package packaging

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// startAPIServer boots kube-apiserver and etcd (KUBEBUILDER_ASSETS, as
// `make test-packaging` sets it) with Bulkhead's CRDs and the Prometheus
// Operator's. It fails, never skips, without the binaries.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	c, _ := startAPIServerConfig(t)
	return c
}

// startAPIServerConfig is startAPIServer that also returns the admin's
// rest config (to impersonate users).
func startAPIServerConfig(t *testing.T) (client.Client, *rest.Config) {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test-packaging` (it builds etcd and kube-apiserver into bin/kube)")
	}
	root := repoRoot(t)
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{
			filepath.Join(root, "config", "crd", "bases"),
			filepath.Join(root, "test", "install", "testdata", "crds"),
		},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, cfg
}

func apply(ctx context.Context, t *testing.T, c client.Client, what string, obj map[string]any, ns string) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	if ns != "" && u.GetNamespace() == "" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" &&
		!strings.HasPrefix(u.GetKind(), "ValidatingAdmissionPolicy") && u.GetKind() != "CustomResourceDefinition" {
		u.SetNamespace(ns)
	}
	if u.GetNamespace() != "" {
		err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: u.GetNamespace()}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("packaging-test"), client.ForceOwnership); err != nil {
		t.Errorf("%s: %s %s rejected by the API server: %v", what, u.GetKind(), u.GetName(), err)
	}
}

// TestRenderedChartAndBundleApply: what `helm install` would send (default
// values, and everything on, in a non-default namespace) and every manifest
// of the OLM bundle except the CSV are accepted by a real API server.
func TestRenderedChartAndBundleApply(t *testing.T) {
	c := startAPIServer(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		values map[string]any
		ns     string
	}{{"chart, default values", nil, "bulkhead-system"}, {"chart, everything on", allOn(), "security"}} {
		n := 0
		for _, objs := range render(t, tc.values, tc.ns) {
			for _, o := range objs {
				apply(ctx, t, c, tc.name, o, tc.ns)
				n++
			}
		}
		if n < 15 {
			t.Errorf("%s: only %d objects rendered", tc.name, n)
		}
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), "bundle", "manifests", "*.yaml"))
	for _, f := range files {
		if strings.HasSuffix(f, ".clusterserviceversion.yaml") {
			continue // needs OLM's CRDs; validated by TestBundleValid
		}
		for _, d := range readDocs(t, f) {
			var obj map[string]any
			if err := yaml.Unmarshal(d, &obj); err != nil {
				t.Fatal(err)
			}
			apply(ctx, t, c, "bundle "+filepath.Base(f), obj, "bulkhead-system")
		}
	}
}
