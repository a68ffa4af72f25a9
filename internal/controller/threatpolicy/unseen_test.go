package threatpolicy

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// A Quarantine created a moment ago but not yet in the cache still counts
// against budgets and the cluster cap (the flood once reached 41 of 40).
func TestCreatedQuarantinesCountUntilTheCacheShowsThem(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	r := &ContainmentReconciler{Now: func() time.Time { return now }}
	a := types.NamespacedName{Namespace: "web", Name: "shop-1"}
	b := types.NamespacedName{Namespace: "web", Name: "shop-2"}
	r.rememberCreated(a, "shop-1-abc", []string{"web-tier"})
	r.rememberCreated(b, "shop-2-def", []string{"web-tier", "all"})

	count := func(listed map[types.NamespacedName]bool, at time.Time) policy.Env {
		env := policy.Env{Now: at, ActiveByPolicy: map[string]int{}}
		r.countUnseen(listed, &env)
		return env
	}
	env := count(map[types.NamespacedName]bool{a: true}, now)
	if env.ActiveTotal != 1 || env.ActiveByPolicy["web-tier"] != 1 || env.ActiveByPolicy["all"] != 1 {
		t.Fatalf("only shop-2 is unseen: total %d, by policy %v", env.ActiveTotal, env.ActiveByPolicy)
	}
	if env := count(nil, now); env.ActiveTotal != 1 {
		t.Fatalf("shop-1 was seen once and must not count twice: total %d", env.ActiveTotal)
	}
	if env := count(nil, now.Add(unseenGrace+time.Second)); env.ActiveTotal != 0 {
		t.Fatalf("an entry the cache never showed is forgotten after %s: total %d", unseenGrace, env.ActiveTotal)
	}
}

// A reservation taken before the create call counts at once, blocks its
// name and a second Quarantine for the same pod, and a failed create
// gives the slot back.
func TestReservationHoldsSlotNameAndPodUntilCreateFails(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	r := &ContainmentReconciler{Now: func() time.Time { return now }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1"}}
	w := &world{pod: pod, names: map[string]bool{}}
	spec := &securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "web-tier", Policies: []string{"web-tier"}}}
	first := r.reserve(w, spec)
	second := r.reserve(&world{pod: pod, names: map[string]bool{}}, spec)
	if first == second {
		t.Fatalf("two reservations share the name %s", first)
	}
	if !r.unseenFor("web", "shop-1") || r.unseenFor("web", "shop-2") || r.unseenFor("other", "shop-1") {
		t.Fatal("unseenFor must match namespace and pod exactly")
	}
	env := policy.Env{Now: now, ActiveByPolicy: map[string]int{}}
	r.countUnseen(nil, &env)
	if env.ActiveTotal != 2 || env.ActiveByPolicy["web-tier"] != 2 {
		t.Fatalf("two reservations: total %d, by policy %v", env.ActiveTotal, env.ActiveByPolicy)
	}
	r.forgetCreated(first)
	r.forgetCreated(second)
	if r.unseenFor("web", "shop-1") {
		t.Fatal("failed creates must give their reservation back")
	}
	env = policy.Env{Now: now, ActiveByPolicy: map[string]int{}}
	r.countUnseen(nil, &env)
	if env.ActiveTotal != 0 {
		t.Fatalf("after failed creates: total %d", env.ActiveTotal)
	}
}
