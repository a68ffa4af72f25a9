package kubeutil

import (
	"context"
	"encoding/json"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// FieldOwner is Bulkhead's field manager for every write.
const FieldOwner = client.FieldOwner(securityv1alpha1.FieldManager)

// Apply writes u with server-side apply under Bulkhead's field manager,
// forcing ownership: fields someone else edited (tampering) are taken back.
func Apply(ctx context.Context, c client.Writer, u *unstructured.Unstructured) error {
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), FieldOwner, client.ForceOwnership)
}

// ApplyStatus is Apply for the status subresource.
func ApplyStatus(ctx context.Context, c client.StatusClient, u *unstructured.Unstructured) error {
	return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), FieldOwner, client.ForceOwnership)
}

// ApplyObject applies a typed object; see ToUnstructured for what it drops.
func ApplyObject(ctx context.Context, c client.Writer, obj client.Object) error {
	u, err := ToUnstructured(obj)
	if err != nil {
		return err
	}
	return Apply(ctx, c, u)
}

// ToUnstructured converts a typed object (TypeMeta set) and drops what an
// apply configuration must not carry: status and a zero creationTimestamp.
func ToUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	return &unstructured.Unstructured{Object: m}, nil
}

// FromMap round-trips a partial object built as nested maps of typed
// values (actions, durations) through JSON into an apply body.
func FromMap(obj map[string]any) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return u, nil
}
