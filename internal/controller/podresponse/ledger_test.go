package podresponse

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var ledgerNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func quarantineFor(name, pod string, policies ...string) *securityv1alpha1.Quarantine {
	return &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name},
		Spec: securityv1alpha1.QuarantineSpec{
			Target: securityv1alpha1.Target{Name: pod},
			Reason: &securityv1alpha1.QuarantineReason{Policies: policies},
		},
	}
}

func countPending(l *ledger, listed map[types.NamespacedName]*securityv1alpha1.Quarantine, at time.Time) policy.Env {
	env := policy.Env{Now: at, ActiveByPolicy: map[string]int{}}
	l.count(listed, &env)
	return env
}

// A Quarantine created a moment ago but not yet in the cache still counts
// against budgets and the cluster cap (the flood once reached 41 of 40).
func TestCreatesCountUntilTheCacheShowsThem(t *testing.T) {
	var l ledger
	a := types.NamespacedName{Namespace: "web", Name: "shop-1"}
	b := types.NamespacedName{Namespace: "web", Name: "shop-2"}
	l.create(a, "shop-1", []string{"web-tier"}, ledgerNow, false)
	l.create(b, "shop-2", []string{"web-tier", "all"}, ledgerNow, false)

	env := countPending(&l, map[types.NamespacedName]*securityv1alpha1.Quarantine{a: quarantineFor("shop-1", "shop-1", "web-tier")}, ledgerNow)
	if env.ActiveTotal != 1 || env.ActiveByPolicy["web-tier"] != 1 || env.ActiveByPolicy["all"] != 1 {
		t.Fatalf("only shop-2 is unseen: total %d, by policy %v", env.ActiveTotal, env.ActiveByPolicy)
	}
	if env := countPending(&l, nil, ledgerNow); env.ActiveTotal != 1 {
		t.Fatalf("shop-1 was seen once and must not count twice: total %d", env.ActiveTotal)
	}
	if env := countPending(&l, nil, ledgerNow.Add(unseenGrace+time.Second)); env.ActiveTotal != 0 {
		t.Fatalf("an entry the cache never showed is forgotten after %s: total %d", unseenGrace, env.ActiveTotal)
	}
}

// Someone else's Quarantine holding the reserved name is not ours being
// shown: the reservation keeps counting until its own create settles.
func TestCreateIsNotForgottenForAnotherTargetsQuarantine(t *testing.T) {
	var l ledger
	a := types.NamespacedName{Namespace: "web", Name: "shop-1"}
	l.create(a, "shop-1", []string{"web-tier"}, ledgerNow, false)
	env := countPending(&l, map[types.NamespacedName]*securityv1alpha1.Quarantine{a: quarantineFor("shop-1", "other-pod")}, ledgerNow)
	if env.ActiveTotal != 1 || !l.taken(a) || !l.creating("web", "shop-1") {
		t.Fatalf("reservation lost to a same-named Quarantine of another pod: total %d", env.ActiveTotal)
	}
	if l.creating("web", "shop-2") || l.creating("other", "shop-1") {
		t.Fatal("creating must match namespace and pod exactly")
	}
	l.dropCreate(a)
	if env := countPending(&l, nil, ledgerNow); env.ActiveTotal != 0 || l.taken(a) {
		t.Fatalf("a refused create gives its slot back: total %d", env.ActiveTotal)
	}
}

// A policy joining an existing Quarantine takes a slot of its budget (not
// of the cluster cap: the Quarantine already counts) until the cache shows
// it among the Quarantine's policies.
func TestJoinsCountAgainstTheJoiningPolicyUntilShown(t *testing.T) {
	var l ledger
	key := types.NamespacedName{Namespace: "web", Name: "shop-1"}
	l.join(key, "shop-1", []string{"strict"}, ledgerNow)
	before := map[types.NamespacedName]*securityv1alpha1.Quarantine{key: quarantineFor("shop-1", "shop-1", "web-tier")}
	env := countPending(&l, before, ledgerNow)
	if env.ActiveTotal != 0 || env.ActiveByPolicy["strict"] != 1 || env.ActiveByPolicy["web-tier"] != 0 {
		t.Fatalf("join not yet shown: total %d, by policy %v", env.ActiveTotal, env.ActiveByPolicy)
	}
	after := map[types.NamespacedName]*securityv1alpha1.Quarantine{key: quarantineFor("shop-1", "shop-1", "web-tier", "strict")}
	if env := countPending(&l, after, ledgerNow); env.ActiveByPolicy["strict"] != 0 {
		t.Fatalf("shown join counted again: %v", env.ActiveByPolicy)
	}
	if env := countPending(&l, before, ledgerNow); env.ActiveByPolicy["strict"] != 0 {
		t.Fatalf("a join once shown is forgotten: %v", env.ActiveByPolicy)
	}

	l.join(key, "shop-1", []string{"strict"}, ledgerNow)
	released := quarantineFor("shop-1", "shop-1", "web-tier")
	released.Spec.Released = ptr.To(true)
	if env := countPending(&l, map[types.NamespacedName]*securityv1alpha1.Quarantine{key: released}, ledgerNow); env.ActiveByPolicy["strict"] != 0 {
		t.Fatalf("a join into a released Quarantine holds nothing: %v", env.ActiveByPolicy)
	}
}

// reserve gives parallel decisions for the same pod distinct names.
func TestReserveNamesAreDistinct(t *testing.T) {
	r := &Reconciler{Now: func() time.Time { return ledgerNow }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-1"}}
	spec := &securityv1alpha1.QuarantineSpec{Reason: &securityv1alpha1.QuarantineReason{Policy: "web-tier", Policies: []string{"web-tier"}}}
	first := r.reserve(&world{pod: pod, names: map[string]bool{}}, spec)
	second := r.reserve(&world{pod: pod, names: map[string]bool{}}, spec)
	if first == second {
		t.Fatalf("two reservations share the name %s", first)
	}
	if env := countPending(&r.pending, nil, ledgerNow); env.ActiveTotal != 2 || env.ActiveByPolicy["web-tier"] != 2 {
		t.Fatalf("two reservations: total %d, by policy %v", env.ActiveTotal, env.ActiveByPolicy)
	}
}

// Pending creates count against the namespace share (in the pod's
// namespace only) and, when they carry CordonNode, the cordon cap.
func TestPendingCreatesCountAgainstShareAndCordons(t *testing.T) {
	var l ledger
	l.create(types.NamespacedName{Namespace: "web", Name: "shop-1"}, "shop-1", []string{"p"}, ledgerNow, true)
	l.create(types.NamespacedName{Namespace: "api", Name: "api-1"}, "api-1", []string{"p"}, ledgerNow, false)
	env := policy.Env{Now: ledgerNow, ActiveByPolicy: map[string]int{}, ActiveInNamespace: map[string]int{}, Cordons: map[string]int{},
		Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "shop-2"}}}
	l.count(nil, &env)
	if env.ActiveByPolicy["p"] != 2 || env.ActiveInNamespace["p"] != 1 || env.Cordons["p"] != 1 {
		t.Fatalf("by policy %v, in namespace %v, cordons %v", env.ActiveByPolicy, env.ActiveInNamespace, env.Cordons)
	}
}
