package quarantine

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// The escalations policies write into the spec are reported in status by
// this controller, status's only writer, also while approval is pending.
func TestRecommendationsFromTheSpecAreReported(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	unapproved := false
	rec := securityv1alpha1.Recommendation{Time: metav1.Now(), Policy: "web", Score: "0.97",
		Actions: []securityv1alpha1.ActionType{securityv1alpha1.ActionScaleToZero, securityv1alpha1.ActionCordonNode}}
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "qrec", Namespace: f.ns},
		Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: f.pods[0].Name}, Approved: &unapproved,
			Actions:         []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)},
			Recommendations: []securityv1alpha1.Recommendation{rec}},
	}
	must(t, direct.Create(ctx, q))
	q = drive(t, r, client.ObjectKeyFromObject(q), phaseIs(securityv1alpha1.PhasePending))
	if len(q.Status.Recommendations) != 1 || q.Status.Recommendations[0].Policy != "web" || len(q.Status.Recommendations[0].Actions) != 2 {
		t.Fatalf("status.recommendations %+v, want the spec's", q.Status.Recommendations)
	}
}
