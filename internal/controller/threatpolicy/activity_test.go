package threatpolicy

import (
	"context"
	"testing"
	"time"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestAddPlanKeepsOnePlanPerPod(t *testing.T) {
	var plans []securityv1alpha1.Plan
	for _, pod := range []string{"a", "b", "a", "a"} {
		plans = addPlan(plans, securityv1alpha1.Plan{Namespace: "n", Pod: pod, Score: securityv1alpha1.Score("0." + pod)})
	}
	if len(plans) != 2 || plans[0].Pod != "b" || plans[1].Pod != "a" {
		t.Errorf("plans %+v, want b then a", plans)
	}
}

// An evaluation asks once for the policy's status until it is written, and
// a deleted policy's activity is dropped.
func TestActivityAsksOnceAndForgets(t *testing.T) {
	a := NewActivity()
	ctx := context.Background()
	at := time.Now()
	a.Evaluated(ctx, "a", "falco", at)
	a.Evaluated(ctx, "a", "falco", at)
	if len(a.Policies) != 1 {
		t.Fatalf("%d status requests for two evaluations before a write, want 1", len(a.Policies))
	}
	snap := a.TakeSnapshot("a")
	if !snap.LastSignal["falco"].Equal(at) {
		t.Errorf("no last signal time: %+v", snap)
	}
	a.Forget("a")
	if snap := a.TakeSnapshot("a"); len(snap.LastSignal) != 0 {
		t.Errorf("Forget kept %+v", snap)
	}
}
