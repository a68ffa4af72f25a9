package detection

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

func ladderPolicy(name string) *securityv1alpha1.ThreatPolicy {
	return &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: securityv1alpha1.ThreatPolicySpec{
		Mode:      securityv1alpha1.ModeEnforce,
		Selector:  securityv1alpha1.PodSelection{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 40}, {Name: "behavior", Weight: 60}},
		Scoring:   securityv1alpha1.Scoring{Threshold: "0.7", Sustain: 3, SustainFor: &metav1.Duration{Duration: time.Minute}},
		Response: []securityv1alpha1.ResponseStep{
			{MinScore: "0.7", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}},
			{MinScore: "0.95", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionScaleToZero}}},
		},
	}}
}

// TestBuildExplanation checks the pure builder: detectors by name with
// their age, the fused score, the streak and its sustainFor progress, and
// the distance to each ladder step.
func TestBuildExplanation(t *testing.T) {
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	p := ladderPolicy("web")
	fresh := map[string]detector.Entry{
		"falco":    {Score: 0.9, Reason: "shell in container", Time: now.Add(-90 * time.Second)},
		"behavior": {Score: 0.9, Time: now.Add(-5 * time.Second)},
	}
	since := now.Add(-40 * time.Second)
	last := &policy.Evaluation{Policy: p, Streak: 2, Since: since, At: now.Add(-5 * time.Second)}
	live := policy.Evaluation{Policy: p, Result: scoring.Fuse(p.Spec.Detectors, fresh, nil)}
	x := BuildExplanation(PodKey{"web", "shop-1"}, now, 5*time.Minute, fresh, []PolicyState{{Live: live, Last: last}})

	if len(x.Detectors) != 2 || x.Detectors[0].Name != "behavior" || x.Detectors[1].Name != "falco" {
		t.Fatalf("detectors %+v, want behavior then falco", x.Detectors)
	}
	if x.Detectors[1].Age != "1m30s" || x.Detectors[1].Score != "0.9" || x.Detectors[1].Reason != "shell in container" {
		t.Fatalf("falco %+v, want 0.9, age 1m30s and its reason", x.Detectors[1])
	}
	if x.ScoreTTL != "5m0s" {
		t.Fatalf("ttl %q", x.ScoreTTL)
	}
	ps := x.Policies[0]
	if ps.Score != "0.9" || ps.Threshold != "0.7" || !ps.Corroborated || len(ps.Breakdown) != 2 {
		t.Fatalf("policy %+v, want fused 0.9 of two detectors over threshold 0.7", ps)
	}
	if ps.Streak != 2 || ps.Sustain != 3 || ps.Triggered || ps.StreakSince == nil || !ps.StreakSince.Equal(since) {
		t.Fatalf("streak %d/%d triggered %v since %v, want 2/3, not triggered, since %v", ps.Streak, ps.Sustain, ps.Triggered, ps.StreakSince, since)
	}
	if ps.SustainFor != "1m0s" || ps.HeldFor != "40s" {
		t.Fatalf("sustainFor %q held %q, want 1m0s and 40s", ps.SustainFor, ps.HeldFor)
	}
	if len(ps.Steps) != 2 || !ps.Steps[0].Reached || ps.Steps[0].Distance != "0" || ps.Steps[1].Reached || ps.Steps[1].Distance != "0.05" {
		t.Fatalf("steps %+v, want 0.7 reached and 0.95 at 0.05", ps.Steps)
	}
	if ps.Steps[1].Actions[0] != securityv1alpha1.ActionScaleToZero {
		t.Fatalf("step actions %v", ps.Steps[1].Actions)
	}
	// The wire form is what the plugin reads.
	data, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	var back Explanation
	if err := json.Unmarshal(data, &back); err != nil || back.Policies[0].Steps[1].Distance != "0.05" {
		t.Fatalf("round trip: %v %+v", err, back)
	}

	// Without a counted evaluation: no streak, nothing held.
	x = BuildExplanation(PodKey{"web", "shop-1"}, now, time.Minute, nil, []PolicyState{{Live: policy.Evaluation{Policy: p}}})
	ps = x.Policies[0]
	if ps.Streak != 0 || ps.LastEvaluated != nil || ps.HeldFor != "0s" || ps.Score != "0" || ps.Steps[0].Distance != "0.7" || len(x.Detectors) != 0 {
		t.Fatalf("empty pod: %+v", x)
	}
}

// TestEvaluatorExplain reads the live view from a real evaluator: the
// scores recorded, the streak counted, and only covering policies.
func TestEvaluatorExplain(t *testing.T) {
	covering := ladderPolicy("a")
	other := ladderPolicy("b")
	other.Spec.Selector.PodSelector.MatchLabels["app"] = "db"
	e := fakeEvaluator(t, nil, append(shop(), covering, other)...)
	ctx := context.Background()
	for _, det := range []string{"falco", "behavior"} {
		if err := e.Record(ctx, []detector.Signal{{Namespace: "web", Pod: "shop-1", Detector: det, Score: 0.8}}); err != nil {
			t.Fatal(err)
		}
	}
	x, err := e.Explain(ctx, PodKey{"web", "shop-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Detectors) != 2 || len(x.Policies) != 1 || x.Policies[0].Name != "a" {
		t.Fatalf("explanation %+v, want two detectors and policy a only", x)
	}
	if ps := x.Policies[0]; ps.Score != "0.8" || ps.Streak != 2 || ps.LastEvaluated == nil {
		t.Fatalf("policy a %+v, want score 0.8 after a streak of 2", ps)
	}
	// Explaining counts nothing.
	if x, _ = e.Explain(ctx, PodKey{"web", "shop-1"}); x.Policies[0].Streak != 2 {
		t.Fatalf("streak moved to %d by explaining", x.Policies[0].Streak)
	}
	if _, err := e.Explain(ctx, PodKey{"web", "gone"}); err != ErrNoPod {
		t.Fatalf("unknown pod: %v, want ErrNoPod", err)
	}
}
