// Package guardinstall lets the manager install its own admission guards
// (config/admission) when the install path did not: an OLM bundle cannot
// carry a ValidatingAdmissionPolicy, and Helm can switch it off. Without
// the guard the Quarantine controller refuses hand-made destructive actions
// (AdmissionGuardMissing); with it installed here, they work as on the other
// paths.
package guardinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/config/admission"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// The manager may write these six objects and no other admission policy:
// server-side apply creates with the name known, so RBAC's resourceNames
// restrict create as well as patch (TestManagerInstallsGuard runs under
// exactly this rule).
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=create;patch,resourceNames=bulkhead-quarantine-guard;bulkhead-sensor-guard;bulkhead-baseline-guard

// Prefix is what every install path puts before the guards' names
// (config/default's namePrefix, the Helm chart), so the manager writes the
// same objects kustomize and Helm would.
const Prefix = "bulkhead-"

// InstalledByLabel marks the guard objects the manager installed; only
// those it upgrades. Objects of the same name without it came from another
// install path, which keeps them.
const InstalledByLabel = "security.bulkhead.dev/installed-by"

// InstalledByValue is InstalledByLabel's value.
const InstalledByValue = "manager"

// Objects are the guard policies and bindings as the manager applies them:
// prefixed names, bindings pointing at the prefixed policies, labelled.
func Objects() ([]*unstructured.Unstructured, error) {
	files := admission.Manifests()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, n := range names {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(files[n]), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("config/admission/%s: %w", n, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			u.SetName(Prefix + u.GetName())
			if p, ok, _ := unstructured.NestedString(u.Object, "spec", "policyName"); ok {
				if err := unstructured.SetNestedField(u.Object, Prefix+p, "spec", "policyName"); err != nil {
					return nil, err
				}
			}
			l := u.GetLabels()
			if l == nil {
				l = map[string]string{}
			}
			l[InstalledByLabel] = InstalledByValue
			u.SetLabels(l)
			out = append(out, u)
		}
	}
	return out, nil
}

// Installer applies the guards at start.
type Installer struct {
	// Client writes (server-side apply as Bulkhead); Reader reads uncached.
	Client client.Client
	Reader client.Reader
	Log    logr.Logger
	// Retry is the first wait after a failed attempt (doubling to a minute).
	Retry time.Duration
}

// Ensure applies every guard object that is absent or was installed by the
// manager (an upgrade), and leaves those another install path made. It
// returns the names it applied.
func (i *Installer) Ensure(ctx context.Context) ([]string, error) {
	objs, err := Objects()
	if err != nil {
		return nil, err
	}
	var applied []string
	for _, want := range objs {
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(want.GroupVersionKind())
		err := i.Reader.Get(ctx, client.ObjectKeyFromObject(want), have)
		switch {
		case err == nil && have.GetLabels()[InstalledByLabel] != InstalledByValue:
			continue
		case err != nil && !apierrors.IsNotFound(err):
			return applied, fmt.Errorf("reading %s %s: %w", want.GetKind(), want.GetName(), err)
		}
		if err := kubeutil.Apply(ctx, i.Client, want); err != nil {
			return applied, fmt.Errorf("applying %s %s: %w", want.GetKind(), want.GetName(), err)
		}
		applied = append(applied, want.GetKind()+"/"+want.GetName())
	}
	slices.Sort(applied)
	return applied, nil
}

// Start runs Ensure until it succeeds (a manager.Runnable, leader only).
// Until then the Quarantine controller reports AdmissionGuardMissing on
// hand-made destructive actions, as with no guard at all.
func (i *Installer) Start(ctx context.Context) error {
	first := i.Retry
	if first <= 0 {
		first = time.Second
	}
	b := wait.Backoff{Duration: first, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: time.Minute}
	err := wait.ExponentialBackoffWithContext(ctx, b, func(ctx context.Context) (bool, error) {
		applied, err := i.Ensure(ctx)
		if err != nil {
			i.Log.Error(err, "installing the admission guards failed; hand-made destructive actions stay refused (AdmissionGuardMissing) until it succeeds")
			return false, nil
		}
		if len(applied) > 0 {
			i.Log.Info("admission guards installed", "objects", applied)
		}
		return true, nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
