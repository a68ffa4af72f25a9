package packaging

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	validator "github.com/operator-framework/api/pkg/validation/interfaces"

	"github.com/bulkhead-dev/bulkhead/hack/packaging/internal/gen"
)

// The suites `operator-sdk bundle validate --select-optional suite=operatorframework`
// runs: the defaults, OperatorHub (v2 with capabilities and categories),
// good practices, removed APIs and objects.
var bundleValidators = validator.Validators{
	validation.ClusterServiceVersionValidator,
	validation.CustomResourceDefinitionValidator,
	validation.BundleValidator,
	validation.OperatorHubV2Validator,
	validation.StandardCapabilitiesValidator,
	validation.StandardCategoriesValidator,
	validation.GoodPracticesValidator,
	validation.AlphaDeprecatedAPIsValidator,
	validation.ObjectValidator,
}

func validateBundle(t *testing.T, dir string) (errs, warns []string) {
	t.Helper()
	b, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		t.Fatalf("loading bundle %s: %v", dir, err)
	}
	objs := append(b.ObjectsToValidate(), map[string]string{"k8s-version": gen.MinKubeVersion})
	for _, r := range bundleValidators.Validate(objs...) {
		for _, e := range r.Errors {
			errs = append(errs, e.Error())
		}
		for _, w := range r.Warnings {
			warns = append(warns, w.Error())
		}
	}
	return errs, warns
}

// TestBundleValid: no errors and no warnings from any suite.
func TestBundleValid(t *testing.T) {
	errs, warns := validateBundle(t, filepath.Join(repoRoot(t), "bundle"))
	for _, e := range errs {
		t.Errorf("error: %s", e)
	}
	for _, w := range warns {
		t.Errorf("warning: %s", w)
	}
}

// TestBundleValidatorsCatchProblems: a bundle whose CSV lacks an icon and
// whose owned CRD is missing fails, so TestBundleValid can fail.
func TestBundleValidatorsCatchProblems(t *testing.T) {
	root := repoRoot(t)
	files, err := gen.Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	broken := gen.Files{}
	for p, data := range files {
		if !strings.HasPrefix(p, "bundle/") || strings.Contains(p, "threatpolicies.security.bulkhead.dev") {
			continue
		}
		if strings.HasSuffix(p, ".clusterserviceversion.yaml") {
			data = []byte(strings.Replace(string(data), "  icon:\n", "  iconRemoved:\n", 1))
		}
		broken[p] = data
	}
	if err := gen.Write(tmp, broken); err != nil {
		t.Fatal(err)
	}
	errs, _ := validateBundle(t, filepath.Join(tmp, "bundle"))
	if len(errs) == 0 {
		t.Fatal("a bundle without a CRD it owns passed validation")
	}
}
