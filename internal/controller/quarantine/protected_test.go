package quarantine

import (
	"context"
	"strings"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Issue 14 (low): a policy's protectedNamespaces apply to hand-made
// Quarantines too, refused with a reason naming the policy; nothing is
// applied.
func TestHandMadeQuarantineRefusedInPolicyProtectedNamespace(t *testing.T) {
	f := newFixture(t, 1)
	before := f.snapshot(t)
	tp := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: "protects-" + f.ns},
		Spec: securityv1alpha1.ThreatPolicySpec{
			Mode:       securityv1alpha1.ModeEnforce,
			Selector:   securityv1alpha1.PodSelection{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
			Detectors:  []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 1}},
			Scoring:    securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 1},
			Response:   []securityv1alpha1.ResponseStep{{MinScore: "0.8", Actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)}}},
			Safeguards: securityv1alpha1.Safeguards{ProtectedNamespaces: []string{f.ns}},
		}}
	must(t, direct.Create(ctx, tp))
	t.Cleanup(func() { _ = direct.Delete(context.Background(), tp) })
	r, _ := newReconciler(direct)
	r.ProtectedBy = func(ctx context.Context, ns string) (string, error) {
		var tps securityv1alpha1.ThreatPolicyList
		if err := direct.List(ctx, &tps); err != nil {
			return "", err
		}
		return policy.ProtectingPolicy(tps.Items, ns), nil
	}
	key := f.quarantine(t, "by-hand", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionScaleToZero))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseFailed))
	c := apimeta.FindStatusCondition(q.Status.Conditions, securityv1alpha1.ConditionReady)
	if c == nil || c.Reason != securityv1alpha1.ReasonProtectedNamespace || !strings.Contains(c.Message, tp.Name) {
		t.Fatalf("want Ready reason %s naming %s: %+v", securityv1alpha1.ReasonProtectedNamespace, tp.Name, c)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("something was applied:\nbefore %s\nafter %s", before, after)
	}
}
