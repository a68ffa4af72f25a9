package containment

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Every API action type has exactly one entry, with the traits a pass
// orders by (issue 17: isolating first, evidence persisted before the
// actions that change or remove what it records).
func TestBuiltinCoversEveryActionTypeWithItsTraits(t *testing.T) {
	want := map[securityv1alpha1.ActionType]Traits{
		securityv1alpha1.ActionIsolate:     {Isolating: true},
		securityv1alpha1.ActionDetach:      {NeedsPersistedEvidence: true},
		securityv1alpha1.ActionScaleToZero: {Destructive: true, NeedsPersistedEvidence: true},
		securityv1alpha1.ActionCordonNode:  {},
		securityv1alpha1.ActionEvict:       {Destructive: true, NeedsPersistedEvidence: true},
		securityv1alpha1.ActionLabel:       {NeedsPersistedEvidence: true},
	}
	reg := Builtin()
	if len(reg) != len(want) {
		t.Fatalf("registry has %d actions, want %d", len(reg), len(want))
	}
	e := &Engine{}
	for typ, traits := range want {
		got, ok := e.Traits(typ)
		if !ok || got != traits {
			t.Errorf("%s: traits %+v (registered %v), want %+v", typ, got, ok, traits)
		}
	}
	if _, ok := e.Traits("Teleport"); ok {
		t.Error("an unknown type has no traits")
	}
}

func TestUnknownActionTypeIsRefusedAndPlansThePod(t *testing.T) {
	e := &Engine{}
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "web"}, Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "p"}}}
	s := &Scope{Q: q, Target: &Target{}}
	a := securityv1alpha1.Action{Type: "Teleport"}
	st := &securityv1alpha1.ActionStatus{}
	e.Plan(s, a, st)
	if st.State != securityv1alpha1.ActionPending || st.Resource != "Pod/p" {
		t.Fatalf("plan: %+v", st)
	}
	if _, err := e.Apply(context.Background(), s, a, st); err != nil || st.State != securityv1alpha1.ActionRefused {
		t.Fatalf("apply: %+v %v", st, err)
	}
	if _, err := e.Revert(context.Background(), s, a, st); err != nil || st.State != securityv1alpha1.ActionRefused {
		t.Fatalf("revert of an unknown type changes nothing: %+v %v", st, err)
	}
}

// A registry other than Builtin is honoured: the engine dispatches through
// it only.
func TestEngineDispatchesThroughItsRegistry(t *testing.T) {
	rec := &recordingAction{}
	e := &Engine{Actions: Registry{securityv1alpha1.ActionIsolate: rec}}
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "q"}}
	s, a, st := &Scope{Q: q}, securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate}, &securityv1alpha1.ActionStatus{}
	ctx := context.Background()
	e.Plan(s, a, st)
	if _, err := e.Apply(ctx, s, a, st); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revert(ctx, s, a, st); err != nil {
		t.Fatal(err)
	}
	n, err := e.RemoveLeftovers(ctx, func(context.Context, string, string) (bool, error) { return true, nil })
	if err != nil || n != 7 {
		t.Fatalf("leftovers %d %v", n, err)
	}
	if rec.calls != "plan,apply,revert,leftovers" || st.AppliedAt == nil || st.RevertedAt == nil {
		t.Fatalf("calls %q, status %+v", rec.calls, st)
	}
}

type recordingAction struct{ calls string }

func (r *recordingAction) add(c string) {
	if r.calls != "" {
		r.calls += ","
	}
	r.calls += c
}

func (r *recordingAction) Traits() Traits { return Traits{} }
func (r *recordingAction) Plan(*Scope, securityv1alpha1.Action, *securityv1alpha1.ActionStatus) {
	r.add("plan")
}
func (r *recordingAction) Apply(_ context.Context, _ *Engine, _ *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	r.add("apply")
	st.State = securityv1alpha1.ActionApplied
	return Outcome{Changed: true}, nil
}
func (r *recordingAction) Revert(_ context.Context, _ *Engine, _ *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	r.add("revert")
	st.State = securityv1alpha1.ActionReverted
	return Outcome{Changed: true}, nil
}
func (r *recordingAction) Leftovers(context.Context, *Engine, Live) (int, error) {
	r.add("leftovers")
	return 7, nil
}
