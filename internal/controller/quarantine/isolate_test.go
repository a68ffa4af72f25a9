package quarantine

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

func isolateDNS() securityv1alpha1.Action {
	return securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}
}

func TestIsolateApplyTwiceAndRelease(t *testing.T) {
	f := newFixture(t, 2)
	before := f.snapshot(t)
	w := &writes{failAfter: -1}
	r, rec := newReconciler(w.client())
	applied := testutil.ToFloat64(metrics.ActionsTotal.WithLabelValues("Isolate", "Applied"))
	contained := testutil.ToFloat64(metrics.QuarantinesTotal.WithLabelValues("Contained", securityv1alpha1.ReasonSucceeded))
	key := f.quarantine(t, "shop-a", f.pods[0].Name, isolateDNS())
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if testutil.ToFloat64(metrics.ActionsTotal.WithLabelValues("Isolate", "Applied")) != applied+1 ||
		testutil.ToFloat64(metrics.QuarantinesTotal.WithLabelValues("Contained", securityv1alpha1.ReasonSucceeded)) != contained+1 {
		t.Fatal("metrics not recorded once")
	}

	pod := &corev1.Pod{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.pods[0]), pod))
	if pod.Labels[securityv1alpha1.QuarantineLabel] != "shop-a" {
		t.Fatalf("pod not labelled: %v", pod.Labels)
	}
	other := &corev1.Pod{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.pods[1]), other))
	if _, ok := other.Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatal("a pod that is not the target was labelled")
	}
	np := &networkingv1.NetworkPolicy{}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-a"}, np))
	if len(np.Spec.Ingress) != 0 || len(np.Spec.Egress) != 1 || len(np.Spec.PolicyTypes) != 2 {
		t.Fatalf("NetworkPolicy must deny ingress and allow only DNS egress: %+v", np.Spec)
	}
	if np.Spec.Egress[0].Ports[0].Port.IntValue() != 53 || np.Spec.Egress[0].To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" {
		t.Fatalf("egress is not DNS only: %+v", np.Spec.Egress)
	}
	if np.Spec.PodSelector.MatchLabels[securityv1alpha1.QuarantineLabel] != "shop-a" || np.Labels[securityv1alpha1.ManagedByLabel] != "bulkhead" {
		t.Fatalf("NetworkPolicy selector or labels wrong: %+v %v", np.Spec.PodSelector, np.Labels)
	}
	if !slices.ContainsFunc(np.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == securityv1alpha1.FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Fatal("NetworkPolicy not written by server-side apply as bulkhead")
	}
	// A top-priority Deny in every third-party API served (CRDs from testdata).
	for _, fl := range containment.DenyFlavors {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(fl.GVK())
		key := client.ObjectKey{Name: containment.ClusterDenyName(f.ns, "shop-a")}
		if fl.Namespaced() {
			key = client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-a"}
		}
		must(t, direct.Get(ctx, key, u))
	}
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied || st.Resource != "NetworkPolicy/bulkhead-shop-a" {
		t.Fatalf("action status: %+v", st)
	}
	for _, c := range []string{securityv1alpha1.ConditionReady, securityv1alpha1.ConditionContained, securityv1alpha1.ConditionIsolationEffective} {
		cond := apimeta.FindStatusCondition(q.Status.Conditions, c)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != q.Generation {
			t.Fatalf("condition %s: %+v", c, cond)
		}
	}
	if q.Status.Target == nil || q.Status.Target.UID != string(f.pods[0].UID) || q.Status.Target.Owner != "Deployment/shop" || q.Status.Target.Node != f.node {
		t.Fatalf("target not recorded: %+v", q.Status.Target)
	}
	if rec.count("Quarantine", "Contained") != 1 || rec.count("Pod", "Contained") != 1 {
		t.Fatalf("want a Contained event on the Quarantine and on the pod: %v", rec.reasons)
	}

	// Apply twice: a further pass writes nothing.
	n := w.n.Load()
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if extra := w.n.Load() - n; extra != 0 {
		t.Fatalf("second pass made %d writes, want 0", extra)
	}

	release(t, key)
	q = drive(t, r, key, released)
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionReverted {
		t.Fatalf("not reverted: %+v", st)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("cluster not as before release:\nbefore %s\nafter %s", before, after)
	}
}

func TestIsolateReportsOtherPoliciesAndRepairsTampering(t *testing.T) {
	f := newFixture(t, 1)
	allow := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-shop", Namespace: f.ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
		},
	}
	must(t, direct.Create(ctx, allow))
	r, rec := newReconciler(direct)
	key := f.quarantine(t, "shop-b", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	// allow-shop admits the pod, but Bulkhead's own AdminNetworkPolicy (and
	// the other third-party denies served here) is evaluated before every
	// NetworkPolicy (issue 15 item 4: this used to be reported False). The
	// NetworkPolicy-only case is TestIsolationCondition's "gaps, no sensor".
	c := apimeta.FindStatusCondition(q.Status.Conditions, securityv1alpha1.ConditionIsolationEffective)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "DenyOverrides" || !strings.Contains(c.Message, "allow-shop") ||
		!strings.Contains(c.Message, "AdminNetworkPolicy/") {
		t.Fatalf("IsolationEffective must be True (DenyOverrides) naming allow-shop and Bulkhead's deny: %+v", c)
	}

	// Tampering: the label removed and the policy deleted.
	pod := &corev1.Pod{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.pods[0]), pod))
	base := pod.DeepCopy()
	delete(pod.Labels, securityv1alpha1.QuarantineLabel)
	must(t, direct.Patch(ctx, pod, client.MergeFrom(base)))
	must(t, direct.Delete(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "bulkhead-shop-b"}}))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	// Then the policy edited to admit everything.
	np := &networkingv1.NetworkPolicy{}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-b"}, np))
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
	np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
	must(t, direct.Update(ctx, np))
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-b"}, np))
	if len(np.Spec.Ingress) != 0 || len(np.Spec.Egress) != 0 {
		t.Fatalf("edited NetworkPolicy not repaired: %+v", np.Spec)
	}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.pods[0]), pod))
	if pod.Labels[securityv1alpha1.QuarantineLabel] != "shop-b" {
		t.Fatal("label not repaired")
	}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-b"}, &networkingv1.NetworkPolicy{}))
	if rec.count("Quarantine", "Tampered") != 2 || rec.count("Pod", "Tampered") != 2 {
		t.Fatalf("want two Tampered events (removed, edited) on the Quarantine and on the pod: %v", rec.reasons)
	}
	if !slices.ContainsFunc(q.Status.Audit, func(a securityv1alpha1.AuditEntry) bool { return a.Event == "Tampered" }) {
		t.Fatal("tampering not audited")
	}
}

func TestIsolateTwoQuarantinesInOneWorkload(t *testing.T) {
	f := newFixture(t, 2)
	before := f.snapshot(t)
	r, _ := newReconciler(direct)
	a := f.quarantine(t, "shop-a", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	b := f.quarantine(t, "shop-b", f.pods[1].Name, act(securityv1alpha1.ActionIsolate))
	drive(t, r, a, phaseIs(securityv1alpha1.PhaseContained))
	drive(t, r, b, phaseIs(securityv1alpha1.PhaseContained))
	release(t, a)
	drive(t, r, a, released)
	// b still isolates its pod.
	pod := &corev1.Pod{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.pods[1]), pod))
	if pod.Labels[securityv1alpha1.QuarantineLabel] != "shop-b" {
		t.Fatal("releasing a touched b's pod")
	}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-shop-b"}, &networkingv1.NetworkPolicy{}))
	release(t, b)
	drive(t, r, b, released)
	if after := f.snapshot(t); after != before {
		t.Fatalf("cluster not as before:\nbefore %s\nafter %s", before, after)
	}
}

func TestTargetPodMissing(t *testing.T) {
	f := newFixture(t, 1)
	w := &writes{failAfter: -1}
	r, _ := newReconciler(w.client())
	key := f.quarantine(t, "ghost", "no-such-pod", act(securityv1alpha1.ActionIsolate))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseFailed))
	c := apimeta.FindStatusCondition(q.Status.Conditions, securityv1alpha1.ConditionReady)
	if c == nil || c.Reason != securityv1alpha1.ReasonTargetNotFound {
		t.Fatalf("Ready: %+v", c)
	}
	// Only the finalizer and the status were written.
	if n := w.n.Load(); n != 2 {
		t.Fatalf("want 2 writes (finalizer, status), got %d", n)
	}
	release(t, key)
	drive(t, r, key, released)
}

// Another AdminNetworkPolicy tied at the top priority with an Allow rule may
// win over Bulkhead's deny (the API leaves the order undefined), whatever
// the NetworkPolicies say: IsolationEffective is False and names it.
func TestIsolationReportsRivalAdminAllow(t *testing.T) {
	f := newFixture(t, 1)
	anp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
		"metadata": map[string]any{"name": "allow-monitoring-" + f.ns},
		"spec": map[string]any{"priority": int64(0), "subject": map[string]any{"namespaces": map[string]any{}},
			"ingress": []any{map[string]any{"name": "scrape", "action": "Allow", "from": []any{map[string]any{"namespaces": map[string]any{}}}}}},
	}}
	must(t, direct.Create(ctx, anp))
	t.Cleanup(func() { _ = direct.Delete(ctx, anp) })
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "shop-r", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	c := apimeta.FindStatusCondition(q.Status.Conditions, securityv1alpha1.ConditionIsolationEffective)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "AdminNetworkPolicy/allow-monitoring-"+f.ns) {
		t.Fatalf("IsolationEffective must be False naming the rival AdminNetworkPolicy: %+v", c)
	}
	release(t, key)
	drive(t, r, key, released)
}
