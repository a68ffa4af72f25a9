package quarantine

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// TestForbiddenIsRetried: a tenant who fills the NetworkPolicy quota makes
// the API server answer Forbidden. That must not mark Isolate Failed for
// good: the pass errors (the queue backs off), an alert is raised, and once
// the quota is gone Isolate is applied.
func TestForbiddenIsRetried(t *testing.T) {
	f := newFixture(t, 1)
	// A webhook-style denial (a ValidatingAdmissionPolicy answers 403).
	deny := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-netpol-" + f.ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: new(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"networkpolicies"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "object.metadata.namespace != '" + f.ns + "'", Message: "NetworkPolicies are not allowed here", Reason: new(metav1.StatusReasonForbidden)}},
		},
	}
	must(t, direct.Create(ctx, deny))
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: deny.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: deny.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
	}
	must(t, direct.Create(ctx, binding))
	t.Cleanup(func() { _ = direct.Delete(ctx, binding); _ = direct.Delete(ctx, deny) })
	// The policy takes effect a moment after it is created.
	probe := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: f.ns}}
	for i := 0; ; i++ {
		err := direct.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if apierrors.IsForbidden(err) {
			break
		}
		if i > 100 {
			t.Fatalf("the denying policy never took effect: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r, rec := newReconciler(direct)
	alerts := testutil.ToFloat64(metrics.ActionForbidden.WithLabelValues("Isolate"))
	key := f.quarantine(t, "q", f.pods[0].Name, isolateDNS())
	var lastErr error
	for range 6 {
		_, lastErr = r.Reconcile(ctx, reqFor(key))
	}
	if lastErr == nil || !apierrors.IsForbidden(lastErr) {
		t.Logf("status %+v", getQ(t, key).Status)
		t.Fatalf("a Forbidden apply must fail the pass so it is retried with backoff, got %v", lastErr)
	}
	q := getQ(t, key)
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State == securityv1alpha1.ActionFailed {
		t.Fatalf("Forbidden marked Isolate Failed for good: %+v", st)
	}
	if testutil.ToFloat64(metrics.ActionForbidden.WithLabelValues("Isolate")) <= alerts {
		t.Fatal("no alert metric for the Forbidden apply")
	}
	if rec.count("Quarantine", "ActionForbidden") == 0 {
		t.Fatal("no ActionForbidden event")
	}
	must(t, direct.Delete(ctx, binding))
	must(t, direct.Delete(ctx, deny))
	time.Sleep(time.Second) // the policy's removal takes effect
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate not applied once the quota was gone: %+v", st)
	}
}
