package policy

import (
	"testing"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// Issue 14 item 13: Alertmanager's namespace and pod labels can be forged
// by a tenant's metrics (honorLabels), so Alertmanager alone must never
// reach a destructive step. minFreshWeight did not guarantee it: a policy
// weighing Alertmanager at half its weight or more (or only it) let a lone
// forged alert scale the workload to zero and cordon its node.
func TestAlertmanagerAloneNeverReachesADestructiveStep(t *testing.T) {
	weights := func(ws ...securityv1alpha1.DetectorWeight) func(*securityv1alpha1.ThreatPolicy) {
		return func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Detectors = ws }
	}
	am := securityv1alpha1.DetectorWeight{Name: detector.Alertmanager, Weight: 100}
	falco := securityv1alpha1.DetectorWeight{Name: detector.Falco, Weight: 10}
	tetragon := securityv1alpha1.DetectorWeight{Name: detector.Tetragon, Weight: 100}
	zero := func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Scoring.MinFreshWeight = new(int32) }
	fresh := func(names ...string) map[string]detector.Entry {
		out := map[string]detector.Entry{}
		for _, n := range names {
			out[n] = detector.Entry{Score: 1, Reason: "forged"}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		policy      *securityv1alpha1.ThreatPolicy
		fresh       []string
		destructive bool
	}{
		{"alertmanager only policy", tp("am", securityv1alpha1.ModeEnforce, weights(am)), []string{detector.Alertmanager}, false},
		{"alertmanager heavier than falco", tp("am-falco", securityv1alpha1.ModeEnforce, weights(am, falco)), []string{detector.Alertmanager}, false},
		{"minFreshWeight 0", tp("am-zero", securityv1alpha1.ModeEnforce, weights(am, falco), zero), []string{detector.Alertmanager}, false},
		// Corroborated by a second detector, or another detector alone: unchanged.
		{"alertmanager and falco", tp("both", securityv1alpha1.ModeEnforce, weights(am, falco)), []string{detector.Alertmanager, detector.Falco}, true},
		{"tetragon alone with enough weight", tp("tet", securityv1alpha1.ModeEnforce, weights(am, tetragon)), []string{detector.Tetragon}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := scoring.Fuse(tc.policy.Spec.Detectors, fresh(tc.fresh...), nil)
			e := Evaluation{Policy: tc.policy, Streak: 1, Reason: "forged", Result: r, Since: now, At: now}
			d := Decide([]Evaluation{e}, env())
			if d.Create == nil {
				t.Fatalf("no Quarantine (score %v): %+v", r.Score, d)
			}
			has := false
			for _, a := range d.Create.Actions {
				has = has || Destructive(a.Type)
			}
			if has != tc.destructive {
				t.Errorf("actions %s: destructive = %v, want %v", actionTypes(d.Create), has, tc.destructive)
			}
			// Isolation (not destructive) still happens on Alertmanager alone.
			if len(d.Create.Actions) == 0 || d.Create.Actions[0].Type != securityv1alpha1.ActionIsolate {
				t.Errorf("actions %s: want Isolate first", actionTypes(d.Create))
			}
		})
	}
}
