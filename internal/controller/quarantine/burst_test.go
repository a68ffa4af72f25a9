package quarantine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

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
	counted := interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			reads.Add(1)
			return c.List(ctx, list, opts...)
		},
	})
	r.APIReader = counted
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
	q := getQ(t, key)
	if st := actionState(q, securityv1alpha1.ActionIsolate).State; st != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate %s, want Applied: isolation is never held", st)
	}
	if st := actionState(q, securityv1alpha1.ActionLabel).State; st != securityv1alpha1.ActionPending {
		t.Fatalf("Label %s while %s awaits isolation, want Pending", st, other)
	}
	// The evidence waits too (its Secret write and reads would compete
	// with the other's isolation); it was snapshotted before isolating.
	if q.Status.Evidence != nil {
		t.Fatal("evidence persisted while another Quarantine awaits isolation")
	}
	if q.Status.Phase != securityv1alpha1.PhaseContaining {
		t.Fatalf("phase %s with the evidence deferred, want Containing", q.Status.Phase)
	}

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
// every action's state; one applied in an earlier pass still gets one.
func TestAppliedEventsFoldIntoContained(t *testing.T) {
	f := newFixture(t, 1)
	key := f.quarantine(t, "qv", f.pods[0].Name, isolateDNS(), labelAction())
	r, rec := newReconciler(direct)
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	for _, c := range []struct {
		reason string
		want   int
	}{{"IsolateApplied", 1}, {"LabelApplied", 0}, {"Contained", 1}} {
		if n := rec.count("Quarantine", c.reason); n != c.want {
			t.Errorf("%d %s Events on the Quarantine, want %d: %v", n, c.reason, c.want, rec.reasons)
		}
	}
}
