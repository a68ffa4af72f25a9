package policy

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func tp(name string, mode securityv1alpha1.PolicyMode, mut ...func(*securityv1alpha1.ThreatPolicy)) *securityv1alpha1.ThreatPolicy {
	p := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: securityv1alpha1.ThreatPolicySpec{
		Mode:      mode,
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 1}},
		Scoring:   securityv1alpha1.Scoring{Threshold: "0.8", Sustain: 1},
		Response: []securityv1alpha1.ResponseStep{
			{MinScore: "0.8", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}},
			{MinScore: "0.95", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionScaleToZero}, {Type: securityv1alpha1.ActionCordonNode}}},
		},
		Safeguards: securityv1alpha1.Safeguards{MaxActiveQuarantines: 2},
	}}
	for _, m := range mut {
		m(p)
	}
	return p
}

func ev(p *securityv1alpha1.ThreatPolicy, score float64, streak int) Evaluation {
	return Evaluation{Policy: p, Streak: streak, Reason: "shell", Result: scoring.Result{Score: score, Top: "falco", Detectors: 1, FreshWeight: 1, TotalWeight: 1}}
}

func env(mut ...func(*Env)) Env {
	e := Env{Now: now, ManagerNamespace: "bulkhead-system", ActiveByPolicy: map[string]int{},
		Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1"}}}
	for _, m := range mut {
		m(&e)
	}
	return e
}

func existing(spec *securityv1alpha1.QuarantineSpec, byPolicy bool) *securityv1alpha1.Quarantine {
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "web", Annotations: map[string]string{}}, Spec: *spec}
	if byPolicy {
		q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] = spec.Reason.Policy
	}
	return q
}

func actionTypes(s *securityv1alpha1.QuarantineSpec) string {
	out := make([]string, 0, len(s.Actions))
	for _, a := range s.Actions {
		out = append(out, string(a.Type))
	}
	return strings.Join(out, ",")
}

func TestDecide(t *testing.T) {
	enforce := tp("enforce", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Hour}
	})
	approval := tp("approval", securityv1alpha1.ModeRequireApproval, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Release.ApprovalTimeout = &metav1.Duration{Duration: 30 * time.Minute}
		p.Spec.Release.AutoReleaseAfter = &metav1.Duration{Duration: time.Hour}
	})
	dryrun := tp("dryrun", securityv1alpha1.ModeDryRun)
	sustain3 := tp("sustain", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Scoring.Sustain = 3 })
	protects := tp("protects", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Safeguards.ProtectedNamespaces = []string{"web"} })
	cooldown := tp("cooldown", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Safeguards.Cooldown = &metav1.Duration{Duration: 10 * time.Minute}
	})
	sustainFor := tp("sustainfor", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Scoring.Sustain = 3
		p.Spec.Scoring.SustainFor = &metav1.Duration{Duration: 30 * time.Second}
	})
	// A weight-1 detector alone among weight 1 + 9: 10% of the weight fresh.
	lone := func(p *securityv1alpha1.ThreatPolicy, score float64) Evaluation {
		e := ev(p, score, 1)
		e.Result.FreshWeight, e.Result.TotalWeight = 1, 10
		return e
	}
	heavy := func(p *securityv1alpha1.ThreatPolicy, score float64) Evaluation {
		e := ev(p, score, 1)
		e.Result.FreshWeight, e.Result.TotalWeight = 9, 10
		return e
	}
	timed := func(p *securityv1alpha1.ThreatPolicy, streak int, held time.Duration) Evaluation {
		e := ev(p, 0.9, streak)
		e.Since, e.At = now.Add(-held), now
		return e
	}
	ours := func(p string, actions ...securityv1alpha1.ActionType) *securityv1alpha1.Quarantine {
		s := &securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: p, Policies: []string{p}, Score: "0.8"}}
		for _, a := range actions {
			s.Actions = append(s.Actions, securityv1alpha1.Action{Type: a})
		}
		return existing(s, true)
	}

	cases := []struct {
		name  string
		evals []Evaluation
		env   Env
		check func(t *testing.T, o Outcome)
	}{
		{"below threshold: nothing", []Evaluation{ev(enforce, 0.79, 5)}, env(), func(t *testing.T, o Outcome) {
			if o.Create != nil || len(o.Plans) != 0 || len(o.Triggers) != 0 {
				t.Errorf("%+v", o)
			}
		}},
		{"sustain not reached: nothing", []Evaluation{ev(sustain3, 0.9, 2)}, env(), func(t *testing.T, o Outcome) {
			if o.Create != nil {
				t.Error("created before sustain")
			}
		}},
		{"sustain reached: create", []Evaluation{ev(sustain3, 0.9, 3)}, env(), func(t *testing.T, o Outcome) {
			if o.Create == nil || actionTypes(o.Create) != "Isolate" {
				t.Errorf("%+v", o.Create)
			}
		}},
		{"enforce creates approved with the ladder up to the score", []Evaluation{ev(enforce, 0.97, 1)}, env(), func(t *testing.T, o Outcome) {
			c := o.Create
			if c == nil || !*c.Approved || actionTypes(c) != "Isolate,ScaleToZero,CordonNode" || c.Reason.Policy != "enforce" || c.Reason.Score != "0.97" || c.AutoReleaseAfter.Duration != 2*time.Hour {
				t.Errorf("%+v", c)
			}
		}},
		{"require approval creates unapproved with the timeout", []Evaluation{ev(approval, 0.85, 1)}, env(), func(t *testing.T, o Outcome) {
			c := o.Create
			if c == nil || *c.Approved || c.ApprovalTimeout.Duration != 30*time.Minute {
				t.Errorf("%+v", c)
			}
		}},
		{"dry run plans only", []Evaluation{ev(dryrun, 0.9, 1)}, env(), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["dryrun"].BlockedBy != "" || len(o.Plans["dryrun"].Actions) != 1 {
				t.Errorf("%+v", o)
			}
		}},
		{"dry run names the safeguard that would block", []Evaluation{ev(dryrun, 0.9, 1)}, env(func(e *Env) { e.ActiveByPolicy["dryrun"] = 2 }), func(t *testing.T, o Outcome) {
			if o.Plans["dryrun"].BlockedBy != BlockedBudget {
				t.Errorf("%+v", o.Plans)
			}
		}},
		{"pause makes enforce a plan", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) { e.Paused = true }), func(t *testing.T, o Outcome) {
			if o.Create != nil || len(o.Plans) != 1 {
				t.Errorf("%+v", o)
			}
		}},
		{"always-protected namespace", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) { e.Pod.Namespace = "kube-system" }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["enforce"].BlockedBy != BlockedProtectedNamespace {
				t.Errorf("%+v", o)
			}
		}},
		{"manager namespace", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) { e.Pod.Namespace = "bulkhead-system" }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["enforce"].BlockedBy != BlockedProtectedNamespace {
				t.Errorf("%+v", o)
			}
		}},
		{"policy's protected namespace", []Evaluation{ev(protects, 0.9, 1)}, env(), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["protects"].BlockedBy != BlockedProtectedNamespace {
				t.Errorf("%+v", o)
			}
		}},
		{"budget exhausted", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) { e.ActiveByPolicy["enforce"] = 2 }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["enforce"].BlockedBy != BlockedBudget {
				t.Errorf("%+v", o)
			}
		}},
		{"cluster cap", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) { e.ActiveTotal, e.MaxActive = 5, 5 }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["enforce"].BlockedBy != BlockedClusterCap {
				t.Errorf("%+v", o)
			}
		}},
		{"cooldown after a release", []Evaluation{ev(cooldown, 0.9, 1)}, env(func(e *Env) { e.LastRelease = now.Add(-5 * time.Minute) }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Plans["cooldown"].BlockedBy != BlockedCooldown {
				t.Errorf("%+v", o)
			}
		}},
		{"cooldown over", []Evaluation{ev(cooldown, 0.9, 1)}, env(func(e *Env) { e.LastRelease = now.Add(-11 * time.Minute) }), func(t *testing.T, o Outcome) {
			if o.Create == nil {
				t.Error("not created after the cooldown")
			}
		}},
		{"hand-made quarantine without the policy's actions is escalated, not a shield", []Evaluation{ev(enforce, 0.97, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionLabel}}}, false)
			e.Existing.Status.Phase = securityv1alpha1.PhaseContained
		}), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Update == nil || !o.HandMade || actionTypes(o.Update) != "Label,Isolate,ScaleToZero,CordonNode" || o.Update.Reason != nil {
				t.Errorf("%+v", o)
			}
		}},
		{"hand-made quarantine with the policy's actions changes nothing", []Evaluation{ev(enforce, 0.85, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}, false)
		}), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Update != nil || len(o.Plans) != 0 {
				t.Errorf("%+v", o)
			}
		}},
		{"unapproved hand-made quarantine is superseded", []Evaluation{ev(enforce, 0.97, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}, Approved: new(false)}, false)
		}), func(t *testing.T, o Outcome) {
			if o.Create == nil || o.HandMade || actionTypes(o.Create) != "Isolate,ScaleToZero,CordonNode" {
				t.Errorf("%+v", o)
			}
		}},
		{"failed hand-made quarantine is superseded", []Evaluation{ev(enforce, 0.9, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}, false)
			e.Existing.Status.Phase = securityv1alpha1.PhaseFailed
		}), func(t *testing.T, o Outcome) {
			if o.Create == nil {
				t.Errorf("%+v", o)
			}
		}},
		{"forged created-by is a hand-made quarantine", []Evaluation{ev(enforce, 0.97, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionLabel}},
				Reason: &securityv1alpha1.QuarantineReason{Policy: "enforce", Policies: []string{"enforce"}}}, true)
			e.MadeByPolicy = func(*securityv1alpha1.Quarantine) bool { return false }
		}), func(t *testing.T, o Outcome) {
			if o.Update == nil || !o.HandMade || o.Update.Reason.Score != "" {
				t.Errorf("%+v", o)
			}
		}},
		{"one low-weight detector alone does not reach destructive steps", []Evaluation{lone(enforce, 1)}, env(), func(t *testing.T, o Outcome) {
			if o.Create == nil || actionTypes(o.Create) != "Isolate" {
				t.Errorf("%+v", o.Create)
			}
		}},
		{"minFreshWeight met by one heavy detector", []Evaluation{heavy(enforce, 1)}, env(), func(t *testing.T, o Outcome) {
			if o.Create == nil || actionTypes(o.Create) != "Isolate,ScaleToZero,CordonNode" {
				t.Errorf("%+v", o.Create)
			}
		}},
		{"a burst inside sustainFor does not trigger", []Evaluation{timed(sustainFor, 3, 10*time.Second)}, env(), func(t *testing.T, o Outcome) {
			if o.Create != nil || len(o.Triggers) != 0 {
				t.Errorf("%+v", o)
			}
		}},
		{"sustainFor held triggers", []Evaluation{timed(sustainFor, 3, 31*time.Second)}, env(), func(t *testing.T, o Outcome) {
			if o.Create == nil {
				t.Errorf("%+v", o)
			}
		}},
		{"escalation under enforce adds actions", []Evaluation{ev(enforce, 0.96, 1)}, env(func(e *Env) { e.Existing = ours("enforce", securityv1alpha1.ActionIsolate) }), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Update == nil || actionTypes(o.Update) != "Isolate,ScaleToZero,CordonNode" || o.Update.Reason.Score != "0.96" {
				t.Errorf("%+v", o)
			}
		}},
		{"escalation under approval is a recommendation", []Evaluation{ev(approval, 0.96, 1)}, env(func(e *Env) { e.Existing = ours("approval", securityv1alpha1.ActionIsolate) }), func(t *testing.T, o Outcome) {
			if len(o.Recommendations) != 1 || len(o.Recommendations[0].Actions) != 2 || (o.Update != nil && actionTypes(o.Update) != "Isolate") {
				t.Errorf("%+v", o)
			}
		}},
		{"same step again changes nothing", []Evaluation{ev(enforce, 0.8, 1)}, env(func(e *Env) { e.Existing = ours("enforce", securityv1alpha1.ActionIsolate) }), func(t *testing.T, o Outcome) {
			if o.Update != nil || o.Create != nil || len(o.Recommendations) != 0 {
				t.Errorf("%+v", o)
			}
		}},
		{"two policies, one quarantine naming both; approval makes it unapproved; shortest autorelease", []Evaluation{ev(enforce, 0.9, 1), ev(approval, 0.9, 1)}, env(), func(t *testing.T, o Outcome) {
			c := o.Create
			if c == nil || strings.Join(c.Reason.Policies, ",") != "enforce,approval" || c.Reason.Policy != "enforce" || *c.Approved || c.AutoReleaseAfter.Duration != time.Hour {
				t.Errorf("%+v", c)
			}
		}},
		{"a second policy joins an existing quarantine", []Evaluation{ev(tp("other", securityv1alpha1.ModeEnforce), 0.9, 1)}, env(func(e *Env) { e.Existing = ours("enforce", securityv1alpha1.ActionIsolate) }), func(t *testing.T, o Outcome) {
			if o.Update == nil || strings.Join(o.Update.Reason.Policies, ",") != "enforce,other" {
				t.Errorf("%+v", o)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, Decide(tc.evals, tc.env)) })
	}
}

func TestName(t *testing.T) {
	long := strings.Repeat("a", 60) + "-bcdefgh"
	taken := map[string]bool{}
	for i, want := range []string{strings.Repeat("a", 60) + "-bc", strings.Repeat("a", 60) + "-2", strings.Repeat("a", 60) + "-3"} {
		got := Name(long, func(n string) bool { return taken[n] })
		if got != want || len(got) > 63 {
			t.Errorf("%d: Name = %q (%d), want %q", i, got, len(got), want)
		}
		taken[got] = true
	}
	if got := Name("shop-1", func(string) bool { return false }); got != "shop-1" {
		t.Errorf("short name changed: %q", got)
	}
}

func TestSelects(t *testing.T) {
	p := tp("p", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Selector = securityv1alpha1.PodSelection{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
		}
	})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"tier": "web"}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}}}
	if ok, err := Selects(p, ns, pod); !ok || err != nil {
		t.Errorf("matching pod not selected: %v", err)
	}
	pod.Labels["app"] = "other"
	if ok, _ := Selects(p, ns, pod); ok {
		t.Error("other pod selected")
	}
}

func TestAutoRelease(t *testing.T) {
	p := tp("p", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Release.AutoReleaseAfter = &metav1.Duration{Duration: time.Hour}
	})
	ps := []*securityv1alpha1.ThreatPolicy{p}
	q := existing(&securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "p"}, AutoReleaseAfter: &metav1.Duration{Duration: time.Hour}}, true)
	q.CreationTimestamp = metav1.NewTime(now)
	if due, ok := AutoReleaseDue(q, ps); !ok || !due.Equal(now.Add(time.Hour)) {
		t.Errorf("due %v %v", due, ok)
	}
	q.Annotations[AutoReleaseAtAnnotation] = now.Add(3 * time.Hour).Format(time.RFC3339)
	if due, _ := AutoReleaseDue(q, ps); !due.Equal(now.Add(3 * time.Hour)) {
		t.Errorf("extended due %v", due)
	}
	if _, ok := AutoReleaseDue(q, []*securityv1alpha1.ThreatPolicy{nil}); ok {
		t.Error("a Quarantine whose policy is gone must not auto-release")
	}
}

// Issue 14 item 11: neither an auto-release-at annotation nor a shortened
// spec.autoReleaseAfter can bring the release forward.
func TestAutoReleaseCannotBeHastened(t *testing.T) {
	p := tp("p", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Release.AutoReleaseAfter = &metav1.Duration{Duration: time.Hour}
	})
	ps := []*securityv1alpha1.ThreatPolicy{p}
	q := existing(&securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "p"}, AutoReleaseAfter: &metav1.Duration{Duration: time.Second}}, true)
	q.CreationTimestamp = metav1.NewTime(now)
	q.Annotations[AutoReleaseAtAnnotation] = now.Add(-time.Hour).Format(time.RFC3339)
	if due, ok := AutoReleaseDue(q, ps); !ok || due.Before(now.Add(time.Hour)) {
		t.Errorf("due %v %v: a forged annotation or a shortened spec hastened auto-release", due, ok)
	}
}

// Issue 14 item 11: "no fresh score" is not "the score fell".
func TestJudgeRelease(t *testing.T) {
	p := tp("p", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Detectors = append(p.Spec.Detectors, securityv1alpha1.DetectorWeight{Name: "behavior", Weight: 1})
	})
	scored := func(score float64, sources ...string) Evaluation {
		e := ev(p, score, 0)
		e.Result.Detectors = len(sources)
		e.Result.Breakdown = nil
		for _, s := range sources {
			e.Result.Breakdown = append(e.Result.Breakdown, securityv1alpha1.ScoreComponent{Source: s})
		}
		return e
	}
	for _, c := range []struct {
		name  string
		evals []Evaluation
		want  ReleaseVerdict
	}{
		{"nothing to evaluate (pod gone, no pod of its workload)", nil, VerdictNoEvidence},
		{"no fresh score at all (after a failover)", []Evaluation{scored(0)}, VerdictNoEvidence},
		{"only another detector is fresh", []Evaluation{scored(0.1, "behavior")}, VerdictNoEvidence},
		{"the triggering detector reports low", []Evaluation{scored(0.5, "falco")}, VerdictFell},
		{"still high", []Evaluation{scored(0.9, "falco")}, VerdictHigh},
		{"one workload pod low, one unscored", []Evaluation{scored(0.5, "falco"), scored(0)}, VerdictNoEvidence},
		{"one workload pod low, one high", []Evaluation{scored(0.5, "falco"), scored(0.85, "falco")}, VerdictHigh},
	} {
		if got := JudgeRelease(c.evals, "falco"); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// A trigger the policy does not weigh: any fresh score is evidence.
	if got := JudgeRelease([]Evaluation{scored(0.1, "behavior")}, "tetragon"); got != VerdictFell {
		t.Errorf("untracked trigger: %s", got)
	}
}

func TestReleaseWithoutEvidenceDue(t *testing.T) {
	q := existing(&securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "p"}}, true)
	q.CreationTimestamp = metav1.NewTime(now)
	with := tp("with", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Release.ReleaseWithoutEvidenceAfter = &metav1.Duration{Duration: 2 * time.Hour}
	})
	without := tp("without", securityv1alpha1.ModeEnforce)
	if ReleaseWithoutEvidenceDue(q, []*securityv1alpha1.ThreatPolicy{with}, now.Add(time.Hour)) {
		t.Error("fallback due too early")
	}
	if !ReleaseWithoutEvidenceDue(q, []*securityv1alpha1.ThreatPolicy{with}, now.Add(2*time.Hour)) {
		t.Error("fallback not due")
	}
	if ReleaseWithoutEvidenceDue(q, []*securityv1alpha1.ThreatPolicy{with, without}, now.Add(10*time.Hour)) {
		t.Error("a contributor without a fallback must hold the Quarantine")
	}
}

// The CordonNode floor is stamped into the Quarantine: the highest of the
// contributors' at creation, raised when a policy with a higher one joins,
// never lowered by one with a lower one; no policy floor, no stamp.
func TestDecideStampsTheCordonNodeFloor(t *testing.T) {
	floor := func(n int32) func(*securityv1alpha1.ThreatPolicy) {
		return func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Safeguards.MinSchedulableNodes = &n }
	}
	stamped := func(s *securityv1alpha1.QuarantineSpec) int32 {
		if s == nil || s.Safeguards == nil || s.Safeguards.MinSchedulableNodes == nil {
			return -1
		}
		return *s.Safeguards.MinSchedulableNodes
	}
	none := Decide([]Evaluation{ev(tp("a", securityv1alpha1.ModeEnforce), 0.9, 1)}, env())
	if got := stamped(none.Create); got != -1 {
		t.Errorf("no policy floor stamped %d", got)
	}
	two := Decide([]Evaluation{ev(tp("a", securityv1alpha1.ModeEnforce, floor(2)), 0.9, 1), ev(tp("b", securityv1alpha1.ModeEnforce, floor(5)), 0.9, 1)}, env())
	if got := stamped(two.Create); got != 5 {
		t.Fatalf("created with floor %d, want 5 (the highest contributor's)", got)
	}
	q := existing(two.Create, true)
	lower := Decide([]Evaluation{ev(tp("c", securityv1alpha1.ModeEnforce, floor(1)), 0.9, 1)}, env(func(e *Env) { e.Existing = q }))
	if got := stamped(lower.Update); got != 5 {
		t.Errorf("a joining policy with a lower floor left %d, want 5", got)
	}
	higher := Decide([]Evaluation{ev(tp("d", securityv1alpha1.ModeEnforce, floor(7)), 0.9, 1)}, env(func(e *Env) { e.Existing = q }))
	if got := stamped(higher.Update); got != 7 {
		t.Errorf("a joining policy with a higher floor left %d, want 7", got)
	}
	if got := stamped(&q.Spec); got != 5 {
		t.Errorf("Decide changed the existing Quarantine's floor to %d", got)
	}
}

// Issue 14 item 14: one namespace holds at most its share of a policy's
// budget, and CordonNode has its own cap that leaves the other actions.
func TestNamespaceShareAndCordonCap(t *testing.T) {
	p := tp("p", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) { p.Spec.Safeguards.MaxActiveQuarantines = 10 })
	if NamespaceShare(p) != 5 || CordonCap(p) != 2 {
		t.Fatalf("defaults: share %d, cordon cap %d", NamespaceShare(p), CordonCap(p))
	}
	full := env(func(e *Env) { e.ActiveByPolicy["p"], e.ActiveInNamespace = 5, map[string]int{"p": 5} })
	if o := Decide([]Evaluation{ev(p, 0.9, 1)}, full); o.Create != nil || o.Plans["p"].BlockedBy != BlockedNamespaceShare {
		t.Errorf("the namespace's share is spent: %+v", o)
	}
	other := env(func(e *Env) { e.ActiveByPolicy["p"], e.ActiveInNamespace = 5, map[string]int{} })
	if o := Decide([]Evaluation{ev(p, 0.9, 1)}, other); o.Create == nil {
		t.Errorf("another namespace must still be contained: %+v", o)
	}
	odd := tp("odd", securityv1alpha1.ModeEnforce, func(p *securityv1alpha1.ThreatPolicy) {
		p.Spec.Safeguards.MaxActiveQuarantines = 3
		p.Spec.Safeguards.NamespaceShare = ptr.To[int32](1)
	})
	if NamespaceShare(odd) != 1 {
		t.Errorf("share rounds up to at least one: %d", NamespaceShare(odd))
	}

	if ShareOf(40, 50) != 20 || ShareOf(0, 50) != 0 || ShareOf(3, 10) != 1 {
		t.Errorf("ShareOf: %d %d %d", ShareOf(40, 50), ShareOf(0, 50), ShareOf(3, 10))
	}
	clusterFull := env(func(e *Env) {
		e.MaxActive, e.ActiveTotal, e.MaxActiveInNamespace, e.ActiveTotalInNamespace = 40, 20, 20, 20
	})
	if o := Decide([]Evaluation{ev(p, 0.9, 1)}, clusterFull); o.Create != nil || o.Plans["p"].BlockedBy != BlockedClusterCapShare {
		t.Errorf("the namespace's share of the cluster cap is spent: %+v", o)
	}
	clusterOther := env(func(e *Env) {
		e.MaxActive, e.ActiveTotal, e.MaxActiveInNamespace, e.ActiveTotalInNamespace = 40, 20, 20, 0
	})
	if o := Decide([]Evaluation{ev(p, 0.9, 1)}, clusterOther); o.Create == nil {
		t.Errorf("another namespace must still get the cluster cap's rest: %+v", o)
	}

	capped := env(func(e *Env) { e.Cordons = map[string]int{"p": 2} })
	o := Decide([]Evaluation{ev(p, 0.97, 1)}, capped)
	if o.Create == nil || slices.ContainsFunc(o.Create.Actions, func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionCordonNode }) ||
		!slices.ContainsFunc(o.Create.Actions, func(a securityv1alpha1.Action) bool { return a.Type == securityv1alpha1.ActionScaleToZero }) ||
		!slices.Equal(o.CordonCapped, []string{"p"}) {
		t.Errorf("cordon cap reached: want the Quarantine without CordonNode but with ScaleToZero, said so: %+v %v", o.Create, o.CordonCapped)
	}
	if o := Decide([]Evaluation{ev(p, 0.97, 1)}, env()); o.Create == nil || !HasCordon(&securityv1alpha1.Quarantine{Spec: *o.Create}) || len(o.CordonCapped) != 0 {
		t.Errorf("under the cap CordonNode applies: %+v", o.Create)
	}
}
