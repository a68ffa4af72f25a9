package quarantine

import (
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// Every third-party deny Isolate writes, with and without DNS, is accepted
// by the upstream CRD schema (internal/containment/testdata/crds, see its
// README) (server-side apply refuses unknown fields), and nothing of it is pruned: a
// field or enum value the real API does not have fails here.
func TestThirdPartyDenyValidAgainstUpstreamSchemas(t *testing.T) {
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "schema-ns", Name: "schema-q", UID: "0b7b7a43-5b3a-4f7c-9b0b-7c1d2e3f4a5b"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: q.Namespace}}
	if err := direct.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, fl := range containment.DenyFlavors {
		for _, dns := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/allowDNS=%v", fl.GVK().Kind, dns), func(t *testing.T) {
				want := fl.Object(q, dns)
				got := want.DeepCopy()
				err := direct.Apply(ctx, client.ApplyConfigurationFromUnstructured(got), client.FieldOwner("schema-test"),
					client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Fatalf("the upstream schema refuses %s: %v", fl.GVK().Kind, err)
				}
				if got.GetCreationTimestamp().Time.IsZero() {
					t.Fatal("the API server's answer was not read back")
				}
				if !equality.Semantic.DeepEqual(normalise(t, got.Object["spec"]), normalise(t, want.Object["spec"])) {
					t.Fatalf("the API server changed the spec (pruned or defaulted):\nsent %v\ngot  %v", want.Object["spec"], got.Object["spec"])
				}
			})
		}
	}
}

// normalise round-trips through JSON so int64 and float64 numbers compare.
func normalise(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	var out any
	must(t, json.Unmarshal(b, &out))
	return out
}
