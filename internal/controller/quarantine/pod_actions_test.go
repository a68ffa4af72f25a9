package quarantine

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func labelAction() securityv1alpha1.Action {
	return securityv1alpha1.Action{Type: securityv1alpha1.ActionLabel, Label: &securityv1alpha1.LabelParams{
		Labels:      map[string]string{"forensics": "hold", "team": "red"},
		Annotations: map[string]string{"incident": "INC-42"},
	}}
}

func getPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out := &corev1.Pod{}
	if err := direct.Get(ctx, client.ObjectKeyFromObject(p), out); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return out
}

func TestLabelAddsOnlyWhatIsAbsentAndRemovesExactlyThat(t *testing.T) {
	f := newFixture(t, 2)
	// "team" already set by someone else: left alone, never removed.
	p := getPod(t, f.pods[0])
	base := p.DeepCopy()
	p.Labels["team"] = "blue"
	must(t, direct.Patch(ctx, p, client.MergeFrom(base)))
	before := f.snapshot(t)
	w := &writes{failAfter: -1}
	r, _ := newReconciler(w.client())
	key := f.quarantine(t, "ql", f.pods[0].Name, labelAction())
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	p = getPod(t, f.pods[0])
	if p.Labels["forensics"] != "hold" || p.Labels["team"] != "blue" || p.Annotations["incident"] != "INC-42" {
		t.Fatalf("labels %v annotations %v", p.Labels, p.Annotations)
	}
	st := actionState(q, securityv1alpha1.ActionLabel)
	if strings.Join(st.AddedLabels, ",") != "forensics" || !strings.Contains(st.Message, "team") {
		t.Fatalf("%+v", st)
	}
	n := w.n.Load()
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if w.n.Load() != n {
		t.Fatal("second pass wrote")
	}
	release(t, key)
	drive(t, r, key, released)
	if after := f.snapshot(t); after != before {
		t.Fatalf("not as before:\nbefore %s\nafter %s", before, after)
	}
}

func TestDetachRelabelsOutOfOwnerAndDeletesOnRelease(t *testing.T) {
	f := newFixture(t, 2)
	r, _ := newReconciler(direct)
	detach := securityv1alpha1.Action{Type: securityv1alpha1.ActionDetach, Detach: &securityv1alpha1.DetachParams{OnRelease: securityv1alpha1.DetachDelete}}
	key := f.quarantine(t, "qd", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), detach)
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	p := getPod(t, f.pods[0])
	if _, ok := p.Labels["app"]; ok {
		t.Fatalf("still selected by its ReplicaSet: %v", p.Labels)
	}
	if _, ok := p.Labels["pod-template-hash"]; ok || p.Labels[securityv1alpha1.QuarantineLabel] != "qd" {
		t.Fatalf("labels %v", p.Labels)
	}
	if st := actionState(q, securityv1alpha1.ActionDetach); len(st.RemovedLabels) != 2 {
		t.Fatalf("%+v", st)
	}
	release(t, key)
	drive(t, r, key, released)
	if p := getPod(t, f.pods[0]); p != nil && p.DeletionTimestamp.IsZero() {
		t.Fatal("detached forensic copy not deleted on release")
	}
	if getPod(t, f.pods[1]).DeletionTimestamp != nil {
		t.Fatal("another pod was deleted")
	}

	keep := securityv1alpha1.Action{Type: securityv1alpha1.ActionDetach, Detach: &securityv1alpha1.DetachParams{OnRelease: securityv1alpha1.DetachKeep}}
	key = f.quarantine(t, "qk", f.pods[1].Name, keep)
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	release(t, key)
	q = drive(t, r, key, released)
	if st := actionState(q, securityv1alpha1.ActionDetach); st.State != securityv1alpha1.ActionNotReverted {
		t.Fatalf("%+v", st)
	}
	if p := getPod(t, f.pods[1]); p == nil || !p.DeletionTimestamp.IsZero() {
		t.Fatal("kept pod was deleted")
	}
}

func TestEvictHonoursPodDisruptionBudget(t *testing.T) {
	f := newFixture(t, 2)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: f.ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
	}
	must(t, direct.Create(ctx, pdb))
	// Its status as the (absent) disruption controller would write it: an
	// unobserved budget makes the API server wait instead of answering.
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 2, DesiredHealthy: 2, ExpectedPods: 2}
	must(t, direct.Status().Update(ctx, pdb))
	r, rec := newReconciler(direct)
	key := f.quarantine(t, "qe", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionEvict))
	var lastErr error
	for range 5 {
		_, lastErr = r.Reconcile(ctx, reconcile.Request{NamespacedName: key})
	}
	if lastErr == nil || !strings.Contains(lastErr.Error(), "PodDisruptionBudget") {
		t.Fatalf("want a blocked eviction error for backoff, got %v", lastErr)
	}
	q := getQ(t, key)
	st := actionState(q, securityv1alpha1.ActionEvict)
	if st.State != securityv1alpha1.ActionPending || st.Attempts < 2 || q.Status.Phase != securityv1alpha1.PhaseContaining {
		t.Fatalf("phase %s, %+v", q.Status.Phase, st)
	}
	if rec.count("Quarantine", "EvictionBlocked") == 0 {
		t.Fatal("blocked eviction not reported")
	}
	if getPod(t, f.pods[0]).DeletionTimestamp != nil {
		t.Fatal("pod deleted despite the budget")
	}
	// The budget goes: the eviction goes through.
	must(t, direct.Delete(ctx, pdb))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if p := getPod(t, f.pods[0]); p != nil && p.DeletionTimestamp.IsZero() {
		t.Fatal("pod not evicted")
	}
	release(t, key)
	q = drive(t, r, key, released)
	if st := actionState(q, securityv1alpha1.ActionEvict); st.State != securityv1alpha1.ActionNotReverted {
		t.Fatalf("%+v", st)
	}
}
