package quarantine

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

func TestWrittenCopyStandsInOnlyWhileTheCacheLags(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	at := func(rv string) *securityv1alpha1.Quarantine {
		return &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", ResourceVersion: rv}}
	}
	for _, c := range []struct {
		name   string
		writes [][2]string // replaced, written
		cached string      // "" = not in the cache
		want   string      // resourceVersion to start from, "" = the cache's
	}{
		{"created, not in the cache yet", [][2]string{{"", "1"}}, "", "1"},
		{"created, in the cache", [][2]string{{"", "1"}}, "1", ""},
		{"written, cache at the version replaced", [][2]string{{"1", "2"}}, "1", "2"},
		{"written, cache caught up", [][2]string{{"1", "2"}}, "2", ""},
		{"written, someone wrote after", [][2]string{{"1", "2"}}, "3", ""},
		{"two writes in one pass, cache at the first base", [][2]string{{"1", "2"}, {"2", "3"}}, "1", "3"},
		{"two writes in one pass, cache between", [][2]string{{"1", "2"}, {"2", "3"}}, "2", "3"},
		{"created then written, cache still empty", [][2]string{{"", "1"}, {"1", "2"}}, "", "2"},
		{"created then written, cache has the create", [][2]string{{"", "1"}, {"1", "2"}}, "1", "2"},
		{"unrelated writes do not chain", [][2]string{{"1", "2"}, {"5", "6"}}, "1", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := &written{}
			for _, wr := range c.writes {
				w.record(key, wr[0], at(wr[1]))
			}
			got := w.latest(key, at(c.cached), c.cached != "")
			gotRV := ""
			if got != nil {
				gotRV = got.ResourceVersion
			}
			if gotRV != c.want {
				t.Fatalf("started from %q, want %q", gotRV, c.want)
			}
			if c.want == "" && w.latest(key, nil, false) != nil {
				t.Fatal("a copy the cache caught up with is still kept")
			}
		})
	}
	w := &written{}
	w.record(key, "1", at("2"))
	w.m[key] = writtenCopy{replaced: w.m[key].replaced, q: w.m[key].q, at: time.Now().Add(-staleFor - time.Second)}
	if w.latest(key, at("1"), true) != nil {
		t.Fatal("a copy older than staleFor still stands in for the cache")
	}
	w.record(key, "1", at("2"))
	w.forget(key)
	if w.latest(key, nil, false) != nil {
		t.Fatal("a forgotten copy stands in for the cache")
	}
}

// laggingCache serves the Quarantine from a frozen copy, as a watch that
// has not caught up does in a burst, and counts the status patches the
// API server refused with a conflict.
func laggingCache(frozen *securityv1alpha1.Quarantine, conflicts *atomic.Int64) client.Client {
	return interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if q, ok := obj.(*securityv1alpha1.Quarantine); ok && key.Name == frozen.Name && key.Namespace == frozen.Namespace {
				frozen.DeepCopyInto(q)
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			err := c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			if apierrors.IsConflict(err) {
				conflicts.Add(1)
			}
			return err
		},
	})
}

// Issue 17 (5.2 status patches per containment in a 200 burst, 3 of them
// conflicts): a pass that starts while the cache still shows the version
// before this controller's last write starts from what that write
// returned, so its status patch is not refused.
func TestLaggingCacheCausesNoConflicts(t *testing.T) {
	f := newFixture(t, 2)
	key := f.quarantine(t, "qlag", f.pods[0].Name, isolateDNS(), labelAction())
	frozen := &securityv1alpha1.Quarantine{}
	must(t, direct.Get(ctx, key, frozen))
	var conflicts atomic.Int64
	r, _ := newReconciler(laggingCache(frozen, &conflicts))
	r.written = &written{}
	for i := range 3 {
		if _, err := r.Reconcile(ctx, reqFor(key)); err != nil {
			t.Fatalf("pass %d: %v", i+1, err)
		}
	}
	if n := conflicts.Load(); n != 0 {
		t.Fatalf("%d status patches refused with a conflict while the cache lagged", n)
	}
	q := &securityv1alpha1.Quarantine{}
	must(t, direct.Get(ctx, key, q))
	if q.Status.Phase != securityv1alpha1.PhaseContained {
		t.Fatalf("phase %q after 3 passes on a lagging cache, want Contained", q.Status.Phase)
	}
}

// Issue 17: a Quarantine handed over by its creator is isolated before
// the watch brings it (the cache does not have it at all), the
// Quarantines created just before hold their other writes while its create
// is on its way, and the creator's Event comes after the isolation.
func TestHandedOverQuarantineIsIsolatedBeforeTheWatch(t *testing.T) {
	f := newFixture(t, 2)
	h := NewHandoff()
	key := types.NamespacedName{Namespace: f.ns, Name: "qhand"}
	earlier := f.quarantine(t, "qearly", f.pods[1].Name, isolateDNS(), labelAction())

	// An earlier Quarantine is isolated, then holds while the create is
	// on its way.
	r, _ := newReconciler(direct)
	r.waiting, r.written, r.stash = h.waiting, h.written, &evidenceStash{}
	h.Creating(key)
	for range 2 {
		res, err := r.Reconcile(ctx, reqFor(earlier))
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter <= 0 {
			t.Fatalf("the earlier Quarantine went on while a create was on its way: %+v", res)
		}
	}

	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, Finalizers: []string{securityv1alpha1.QuarantineFinalizer}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: f.pods[0].Name},
			Actions: []securityv1alpha1.Action{isolateDNS()},
			Reason:  &securityv1alpha1.QuarantineReason{Detector: "behavior", Score: "0.97", Summary: "reverse shell"},
		},
	}
	must(t, direct.Create(ctx, q))
	var mu sync.Mutex
	var order []string
	// The cache has not seen it: every read of it is NotFound.
	blind := interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*securityv1alpha1.Quarantine); ok && k == key {
				return apierrors.NewNotFound(securityv1alpha1.GroupVersion.WithResource("quarantines").GroupResource(), k.Name)
			}
			return c.Get(ctx, k, obj, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			mu.Lock()
			order = append(order, "apply")
			mu.Unlock()
			return c.Apply(ctx, obj, opts...)
		},
	})
	emitted := make(chan struct{})
	h.Created(q, func() {
		mu.Lock()
		order = append(order, "Event")
		mu.Unlock()
		close(emitted)
	})
	select {
	case got := <-h.ch:
		if got.Object.GetName() != key.Name {
			t.Fatalf("handed over %s, want %s", got.Object.GetName(), key.Name)
		}
	default:
		t.Fatal("Created enqueued nothing")
	}
	rb, _ := newReconciler(blind)
	rb.waiting, rb.written, rb.stash = h.waiting, h.written, r.stash
	if _, err := rb.Reconcile(ctx, reqFor(key)); err != nil {
		t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{}
	if err := direct.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: containment.NetworkPolicyName(key.Name)}, np); err != nil {
		t.Fatalf("no NetworkPolicy after the handed-over Quarantine's first pass: %v", err)
	}
	select {
	case <-emitted:
	case <-time.After(5 * time.Second):
		t.Fatal("the creator's Event never ran after the isolation")
	}
	mu.Lock()
	if len(order) < 2 || order[0] != "apply" || order[len(order)-1] != "Event" {
		t.Fatalf("order %v, want the NetworkPolicy before the Event", order)
	}
	mu.Unlock()
	if r.waiting.others(types.NamespacedName{}) {
		t.Fatal("the handed-over Quarantine still counts as awaiting isolation")
	}
	// The watch's create event, late, does not count it again.
	r.waiting.noteCreated().Create(event.CreateEvent{Object: q})
	if r.waiting.others(types.NamespacedName{}) {
		t.Fatal("the watch's late create event counted a handed-over Quarantine again")
	}
}
