package policy

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	return Evaluation{Policy: p, Streak: streak, Reason: "shell", Result: scoring.Result{Score: score, Top: "falco"}}
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
		{"hand-made quarantine is left alone", []Evaluation{ev(enforce, 0.97, 1)}, env(func(e *Env) {
			e.Existing = existing(&securityv1alpha1.QuarantineSpec{Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}, false)
		}), func(t *testing.T, o Outcome) {
			if o.Create != nil || o.Update != nil || o.Plans["enforce"].BlockedBy != BlockedManualQuarantine {
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
	q := existing(&securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "p"}, AutoReleaseAfter: &metav1.Duration{Duration: time.Hour}}, true)
	q.CreationTimestamp = metav1.NewTime(now)
	if due, ok := AutoReleaseDue(q); !ok || !due.Equal(now.Add(time.Hour)) {
		t.Errorf("due %v %v", due, ok)
	}
	q.Annotations[AutoReleaseAtAnnotation] = now.Add(3 * time.Hour).Format(time.RFC3339)
	if due, _ := AutoReleaseDue(q); !due.Equal(now.Add(3 * time.Hour)) {
		t.Errorf("extended due %v", due)
	}
	p := tp("p", securityv1alpha1.ModeEnforce)
	if FallenBelow([]Evaluation{ev(p, 0.8, 0)}) || !FallenBelow([]Evaluation{ev(p, 0.5, 0)}) {
		t.Error("FallenBelow")
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
