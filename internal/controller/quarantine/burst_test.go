package quarantine

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Issue 17: while another Quarantine created meanwhile awaits its first
// pass, a Quarantine that is isolated holds its other actions back (so a
// burst isolates every target before the API server spends itself on
// scale-downs and their pod deletions); they go on once the other has had
// its pass, or holdFor after creation.
func TestOtherActionsWaitForNewQuarantinesIsolation(t *testing.T) {
	f := newFixture(t, 2)
	key := f.quarantine(t, "qw", f.pods[0].Name, isolateDNS(), labelAction())
	r, _ := newReconciler(direct)
	r.waiting, r.stash = &unisolated{}, &evidenceStash{}
	r.waiting.add(key) // its own entry never holds it
	other := types.NamespacedName{Namespace: f.ns, Name: "qnew"}
	r.waiting.add(other)

	var reads atomic.Int64
	counted := countingReads(&reads)
	r.APIReader = counted
	// A held pass writes nothing at all, not even status.observedGeneration:
	// in a 200 burst those patches were 177 of the requests made while
	// other Quarantines still waited for isolation.
	var statusPatches atomic.Int64
	r.Client = interceptor.NewClient(direct, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			statusPatches.Add(1)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	for i := range 4 {
		if i == 1 {
			reads.Store(0)
		}
		res, err := r.Reconcile(ctx, reqFor(key))
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter <= 0 {
			t.Fatalf("pass ended without a requeue while %s awaits isolation: %+v", other, res)
		}
	}
	// The held passes after the first read nothing live (they come back
	// every 250ms).
	if n := reads.Load(); n != 0 {
		t.Fatalf("%d live reads in 3 held passes, want 0", n)
	}
	r.APIReader = direct
	if n := statusPatches.Load(); n != 0 {
		t.Fatalf("%d status patches in 4 passes while another Quarantine awaits isolation, want 0", n)
	}
	// Isolated, and nothing else written: its status (and the evidence
	// snapshotted before isolating, the Label action) would take the API
	// server from the other's isolation.
	if getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] != "qw" {
		t.Fatal("pod not labelled while another Quarantine awaits isolation: isolation is never held")
	}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qw"}, &networkingv1.NetworkPolicy{}))
	q := getQ(t, key)
	if q.Status.Phase != "" || len(q.Status.Actions) != 0 || q.Status.Evidence != nil {
		t.Fatalf("status written while another Quarantine awaits isolation: phase %q, %d actions, evidence %v", q.Status.Phase, len(q.Status.Actions), q.Status.Evidence != nil)
	}
	if _, ok := getPod(t, f.pods[0]).Labels["forensics"]; ok {
		t.Fatal("Label action applied while another Quarantine awaits isolation")
	}
	isolatedBy := time.Now()

	// Past holdFor it goes on even though the other still waits.
	r.Now = func() time.Time { return q.CreationTimestamp.Add(holdFor + time.Second) }
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionLabel).State; st != securityv1alpha1.ActionApplied {
		t.Fatalf("Label %s after holdFor, want Applied", st)
	}
	if q.Status.Evidence == nil {
		t.Fatal("no evidence after holdFor")
	}
	if _, ok := q.Status.Evidence.Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatalf("deferred evidence shows the quarantine label: %v (snapshotted before isolation)", q.Status.Evidence.Labels)
	}
	// Status says when isolation took effect, not when it was recorded.
	if at := actionState(q, securityv1alpha1.ActionIsolate).AppliedAt; at == nil || at.After(isolatedBy) {
		t.Fatalf("Isolate appliedAt %v, want the first pass's time (before %v)", at, isolatedBy)
	}

	// Once the other has had its pass, nothing waits.
	key2 := f.quarantine(t, "qw2", f.pods[1].Name, isolateDNS(), labelAction())
	r.Now = nil
	r.waiting.done(other)
	q = drive(t, r, key2, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionLabel).State; st != securityv1alpha1.ActionApplied {
		t.Fatalf("Label %s, want Applied", st)
	}
	if _, err := r.Reconcile(ctx, reqFor(key)); err != nil {
		t.Fatal(err)
	}
	if r.waiting.others(types.NamespacedName{}) {
		t.Fatal("reconciled Quarantines still counted as awaiting isolation")
	}
}

// Issue 17 (fewer Events in a burst): an action applied in the pass that
// reaches Contained gets no Event of its own, the Contained Event lists
// every action's state. Isolate and Label now both apply in the first pass
// (the evidence is persisted inside it), so neither gets its own.
func TestAppliedEventsFoldIntoContained(t *testing.T) {
	f := newFixture(t, 1)
	key := f.quarantine(t, "qv", f.pods[0].Name, isolateDNS(), labelAction())
	r, rec := newReconciler(direct)
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	for _, c := range []struct {
		reason string
		want   int
	}{{"IsolateApplied", 0}, {"LabelApplied", 0}, {"Contained", 1}} {
		if n := rec.count("Quarantine", c.reason); n != c.want {
			t.Errorf("%d %s Events on the Quarantine, want %d: %v", n, c.reason, c.want, rec.reasons)
		}
	}
}

// Issue 17: with the pod in the cache, a first pass in a burst isolates
// with no live read at all (the NetworkPolicy and the label are the only
// requests); alone, it isolates before the live reads return, and the
// evidence still shows the pod as it was.
func TestIsolationFromTheCachedPod(t *testing.T) {
	f := newFixture(t, 2)
	before := getPod(t, f.pods[0]).Labels
	key := f.quarantine(t, "qe", f.pods[0].Name, isolateDNS(), act(securityv1alpha1.ActionScaleToZero))
	r, _ := newReconciler(direct)
	r.waiting, r.stash, r.podCache, r.cachedHolders = &unisolated{}, &evidenceStash{}, direct, direct
	other := types.NamespacedName{Namespace: f.ns, Name: "qnew"}
	r.waiting.add(other)
	var reads atomic.Int64
	r.APIReader = countingReads(&reads)
	if _, err := r.Reconcile(ctx, reqFor(key)); err != nil {
		t.Fatal(err)
	}
	if n := reads.Load(); n != 0 {
		t.Fatalf("%d live reads in a burst's first pass, want 0", n)
	}
	if getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] != "qe" {
		t.Fatal("pod not labelled by the first pass")
	}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qe"}, &networkingv1.NetworkPolicy{}))
	if q := getQ(t, key); q.Status.Phase != "" {
		t.Fatalf("status written in a burst's first pass: %s", q.Status.Phase)
	}
	if replicas(t, f) == 0 {
		t.Fatal("scaled to zero before the evidence")
	}

	// The pod changes before the pass that writes the evidence: the
	// evidence still shows it as it was before the isolating writes.
	pod := getPod(t, f.pods[0])
	base := pod.DeepCopy()
	pod.Labels["changed"] = "after-isolation"
	must(t, direct.Patch(ctx, pod, client.MergeFrom(base)))

	r.waiting.done(other)
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if q.Status.Evidence == nil || !maps.Equal(q.Status.Evidence.Labels, before) {
		t.Fatalf("evidence labels %v, want the pod's before isolation %v", q.Status.Evidence, before)
	}
	if want := []string{"ReplicaSet/shop-7f9c", "Deployment/shop"}; !slices.Equal(q.Status.Evidence.OwnerChain, want) {
		t.Fatalf("evidence owner chain %v, want %v", q.Status.Evidence.OwnerChain, want)
	}
	if replicas(t, f) != 0 {
		t.Fatal("not scaled to zero")
	}
}

// countingReads is the API server (direct) with every Get and List counted
// in reads.
func countingReads(reads *atomic.Int64) client.WithWatch {
	return interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			reads.Add(1)
			return c.List(ctx, list, opts...)
		},
	})
}

// burstFirstPass runs key's first pass while another new Quarantine
// (returned) awaits its own: it isolates and leaves status for later.
func burstFirstPass(t *testing.T, f *fixture, key client.ObjectKey) (*QuarantineReconciler, types.NamespacedName) {
	t.Helper()
	r, _ := newReconciler(direct)
	r.waiting, r.stash, r.podCache, r.cachedHolders = &unisolated{}, &evidenceStash{}, direct, direct
	other := types.NamespacedName{Namespace: f.ns, Name: "qnew"}
	r.waiting.add(other)
	if _, err := r.Reconcile(ctx, reqFor(key)); err != nil {
		t.Fatal(err)
	}
	if q := getQ(t, key); q.Status.Phase != "" {
		t.Fatalf("status written in a burst's first pass: %s", q.Status.Phase)
	}
	return r, other
}

// A pod deleted between a burst's first pass (which isolated it) and the
// pass that writes status is a target gone after its isolation: the
// Quarantine records it, its isolation and the evidence taken before the
// isolating writes, instead of failing as never found.
func TestBurstTargetGoneBeforeStatus(t *testing.T) {
	f := newFixture(t, 2)
	before := getPod(t, f.pods[0])
	key := f.quarantine(t, "qg", f.pods[0].Name, isolateDNS())
	r, other := burstFirstPass(t, f, key)
	must(t, direct.Delete(ctx, before, client.GracePeriodSeconds(0)))

	r.waiting.done(other)
	q := drive(t, r, key, func(q *securityv1alpha1.Quarantine) bool {
		return q.Status.Phase != "" && q.Status.Phase != securityv1alpha1.PhasePending && q.Status.Phase != securityv1alpha1.PhaseContaining
	})
	if q.Status.Phase != securityv1alpha1.PhaseContained {
		t.Fatalf("phase %s (%v), want Contained", q.Status.Phase, q.Status.Conditions)
	}
	if q.Status.Target == nil || q.Status.Target.UID != string(before.UID) {
		t.Fatalf("target %v, want the isolated pod's uid %s", q.Status.Target, before.UID)
	}
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate %s (%s), want Applied", st.State, st.Message)
	}
	if q.Status.Evidence == nil || !maps.Equal(q.Status.Evidence.Labels, before.Labels) {
		t.Fatalf("evidence %v, want the pod's labels before isolation %v", q.Status.Evidence, before.Labels)
	}
	if want := []string{"ReplicaSet/shop-7f9c"}; !slices.Equal(q.Status.Evidence.OwnerChain, want) {
		t.Fatalf("evidence owner chain %v, want the pod's own owner %v", q.Status.Evidence.OwnerChain, want)
	}
	release(t, key)
	drive(t, r, key, released)
	if err := direct.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qg"}, &networkingv1.NetworkPolicy{}); err == nil {
		t.Fatal("NetworkPolicy left after release")
	}
}

// A deferred record no pass took for longer than any burst holds (its
// Quarantine deleted with its finalizer removed by hand) is dropped, so
// the stash does not grow over a long run.
func TestEvidenceStashDropsOrphans(t *testing.T) {
	s := &evidenceStash{}
	s.put("orphan", &deferred{})
	s.put("recent", &deferred{})
	s.mu.Lock()
	s.m["orphan"].stashed = time.Now().Add(-stashTTL - time.Minute)
	s.mu.Unlock()
	s.put("new", &deferred{})
	if s.has("orphan", false) {
		t.Fatal("a record older than stashTTL kept")
	}
	if !s.has("recent", false) || !s.has("new", false) {
		t.Fatal("recent records dropped")
	}
}

// Released before the pass that writes status, a burst's Quarantine keeps
// the evidence taken before its isolating writes, with the pod's owners.
func TestBurstReleasedBeforeStatusKeepsEvidence(t *testing.T) {
	f := newFixture(t, 1)
	before := getPod(t, f.pods[0])
	key := f.quarantine(t, "qr", f.pods[0].Name, isolateDNS())
	r, _ := burstFirstPass(t, f, key)
	release(t, key)
	q := drive(t, r, key, released)
	if q.Status.Evidence == nil || !maps.Equal(q.Status.Evidence.Labels, before.Labels) {
		t.Fatalf("evidence %v, want the pod's labels before isolation %v", q.Status.Evidence, before.Labels)
	}
	if want := []string{"ReplicaSet/shop-7f9c"}; !slices.Equal(q.Status.Evidence.OwnerChain, want) {
		t.Fatalf("evidence owner chain %v, want %v", q.Status.Evidence.OwnerChain, want)
	}
}
