package podresponse

import (
	"fmt"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Issue 17: a policy's Quarantine is created with the Quarantine
// controller's finalizer (no Quarantine controller runs in this suite), so
// that controller's first pass writes the intent at once instead of a
// finalizer patch first.
func TestQuarantineCreatedWithFinalizer(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if !controllerutil.ContainsFinalizer(q, securityv1alpha1.QuarantineFinalizer) {
			return fmt.Errorf("finalizers %v, want %s from the create", q.Finalizers, securityv1alpha1.QuarantineFinalizer)
		}
		return nil
	})
}
