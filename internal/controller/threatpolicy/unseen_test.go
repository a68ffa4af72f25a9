package threatpolicy

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// A Quarantine created a moment ago but not yet in the cache still counts
// against budgets and the cluster cap (the flood once reached 41 of 40).
func TestCreatedQuarantinesCountUntilTheCacheShowsThem(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	r := &ContainmentReconciler{Now: func() time.Time { return now }}
	a := types.NamespacedName{Namespace: "web", Name: "shop-1"}
	b := types.NamespacedName{Namespace: "web", Name: "shop-2"}
	r.rememberCreated(a, []string{"web-tier"})
	r.rememberCreated(b, []string{"web-tier", "all"})

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
