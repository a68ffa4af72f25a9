// Package testenv starts a real kube-apiserver and etcd (envtest) with
// Bulkhead's CRDs installed, for the envtest suites of every package.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
)

// Scheme knows the built-in kinds and Bulkhead's.
var Scheme = apiruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(securityv1alpha1.AddToScheme(Scheme))
}

// RepoRoot is the repository root.
func RepoRoot() string { return framework.RepoRoot() }

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Options add CRD directories (such as third-party network policy CRDs under
// testdata) to Bulkhead's own.
type Options struct {
	ExtraCRDDirs []string
}

// Start boots kube-apiserver and etcd from KUBEBUILDER_ASSETS. It fails, never
// skips, when the binaries are missing: run `make test` (or `make
// kube-binaries`) to build them.
func Start(opts Options) (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds etcd and kube-apiserver into bin/kube")
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in KUBEBUILDER_ASSETS=%s: run `make kube-binaries`", bin, assets)
		}
	}
	dirs := append([]string{filepath.Join(RepoRoot(), "config", "crd", "bases")}, opts.ExtraCRDDirs...)
	env := &envtest.Environment{
		CRDDirectoryPaths:     dirs,
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	// Tests exercise parallel containment; client-go's default 5 QPS would
	// measure the rate limiter, not Bulkhead.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return &Env{Environment: env, Config: cfg, Client: c}, nil
}

// GVK is a small helper for unstructured objects in tests.
func GVK(group, version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind}
}
