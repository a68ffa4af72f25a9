package policy

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Decide is handed the informer's own Quarantine (read-only, shared with
// every reader of the cache): it must write only to copies, including the
// spare capacity of the slices it extends.
func TestDecideLeavesExistingAlone(t *testing.T) {
	mk := func(byPolicy bool) *securityv1alpha1.Quarantine {
		acts := make([]securityv1alpha1.Action, 1, 8)
		acts[0] = securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate}
		pols := make([]string, 1, 8)
		pols[0] = "enforce"
		recs := make([]securityv1alpha1.Recommendation, 0, 8)
		q := existing(&securityv1alpha1.QuarantineSpec{Actions: acts, Approved: new(true),
			Reason: &securityv1alpha1.QuarantineReason{Policy: "enforce", Policies: pols, Score: "0.81"}, Recommendations: recs}, byPolicy)
		return q
	}
	for _, by := range []bool{true, false} {
		for _, mode := range []securityv1alpha1.PolicyMode{securityv1alpha1.ModeEnforce, securityv1alpha1.ModeRequireApproval} {
			for _, name := range []string{"enforce", "other"} {
				q := mk(by)
				before := q.DeepCopy()
				fullActs := q.Spec.Actions[:cap(q.Spec.Actions)]
				fullPols := q.Spec.Reason.Policies[:cap(q.Spec.Reason.Policies)]
				snapActs := append([]securityv1alpha1.Action(nil), fullActs...)
				snapPols := append([]string(nil), fullPols...)
				e := env(func(e *Env) {
					e.Existing = q
					e.MadeByPolicy = func(*securityv1alpha1.Quarantine) bool { return by }
					e.ActiveInNamespace = map[string]int{}
					e.Cordons = map[string]int{}
				})
				Decide([]Evaluation{ev(tp(name, mode), 0.97, 1)}, e)
				if !equality.Semantic.DeepEqual(before, q) {
					t.Errorf("by=%v mode=%s %s: Existing changed", by, mode, name)
				}
				if !equality.Semantic.DeepEqual(snapActs, fullActs) || !equality.Semantic.DeepEqual(snapPols, fullPols) {
					t.Errorf("by=%v mode=%s %s: spare capacity written", by, mode, name)
				}
			}
		}
	}
}
