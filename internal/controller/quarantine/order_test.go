package quarantine

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// writeLog records, in order, the writes of a pass and the Events it
// emits, named by what they do.
type writeLog struct {
	mu      sync.Mutex
	entries []string
}

func (l *writeLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, s)
}

func (l *writeLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

func (l *writeLog) Eventf(_, _ runtime.Object, _, reason, _, _ string, _ ...any) {
	l.add("Event/" + reason)
}

func kindOf(obj client.Object) string {
	if k := obj.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	t := fmt.Sprintf("%T", obj)
	return t[strings.LastIndex(t, ".")+1:]
}

// client names each write: Quarantine (metadata), status and
// status+evidence, NetworkPolicy, Pod/quarantine-label and Pod (other pod
// patches), Eviction, Secret.
func (l *writeLog) client() client.Client {
	patchData := func(obj client.Object, p client.Patch) string {
		b, err := p.Data(obj)
		if err != nil {
			return ""
		}
		return string(b)
	}
	return interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			l.add(kindOf(obj))
			return c.Create(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			name := kindOf(obj)
			if _, ok := obj.(*corev1.Pod); ok && strings.Contains(patchData(obj, p), securityv1alpha1.QuarantineLabel) {
				name += "/quarantine-label"
			}
			l.add(name)
			return c.Patch(ctx, obj, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			var meta struct{ Kind string }
			b, _ := json.Marshal(obj)
			_ = json.Unmarshal(b, &meta)
			l.add(meta.Kind)
			return c.Apply(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, body client.Object, opts ...client.SubResourceCreateOption) error {
			if sub == "eviction" {
				l.add("Eviction")
			} else {
				l.add(kindOf(obj) + "/" + sub)
			}
			return c.SubResource(sub).Create(ctx, obj, body, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			name := sub
			if _, ok := obj.(*securityv1alpha1.Quarantine); ok && sub == "status" && strings.Contains(patchData(obj, p), `"evidence"`) {
				name = "status+evidence"
			}
			l.add(name)
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	})
}

func indexOf(log []string, pred func(string) bool) int {
	return slices.IndexFunc(log, pred)
}

func is(s string) func(string) bool { return func(x string) bool { return x == s } }

// TestIsolationFirst: after the finalizer, the first writes of a
// containment are the NetworkPolicy and the pod label (made at the same
// time; the Quarantine is their intent, and the plan is in the first status
// patch, right after them); evidence is persisted after them
// and before any action that changes or removes what it records; every
// Event comes after isolation; and the evidence shows the pod's labels as
// they were, without the quarantine label.
func TestIsolationFirst(t *testing.T) {
	t.Run("after the live reads", func(t *testing.T) { testIsolationFirst(t, false) })
	t.Run("from the cached pod", func(t *testing.T) { testIsolationFirst(t, true) })
}

func testIsolationFirst(t *testing.T, cached bool) {
	f := newFixture(t, 1)
	before := getPod(t, f.pods[0]).Labels
	key := f.quarantine(t, "qf", f.pods[0].Name, isolateDNS(), labelAction(), act(securityv1alpha1.ActionEvict))
	l := &writeLog{}
	r := &QuarantineReconciler{Client: l.client(), APIReader: direct, Recorder: l, ManagerNamespace: securityv1alpha1.DefaultManagerNamespace}
	if cached {
		r.podCache = direct
	}
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	log := l.list()
	t.Logf("writes in order: %s", strings.Join(log, ", "))

	if len(log) < 4 || log[0] != "Quarantine" {
		t.Fatalf("writes %v, want the finalizer first", log)
	}
	if first := slices.Sorted(slices.Values(log[1:3])); !slices.Equal(first, []string{"NetworkPolicy", "Pod/quarantine-label"}) {
		t.Fatalf("writes after the finalizer %v, want the NetworkPolicy and the pod label (any order)", log[1:3])
	}
	isolated := 3
	plan := indexOf(log, func(s string) bool { return strings.HasPrefix(s, "status") })
	ev := indexOf(log, is("status+evidence"))
	if ev < isolated {
		t.Fatalf("evidence persisted at write %d, before isolation (write %d): %v", ev, isolated, log)
	}
	for _, later := range []string{"Pod", "Eviction"} { // the Label action's patch, the eviction
		if i := indexOf(log, is(later)); i < ev || i < plan {
			t.Errorf("%s at %d, want after the plan (%d) and the evidence (%d) are persisted: %v", later, i, plan, ev, log)
		}
	}
	if i := indexOf(log, func(s string) bool { return strings.HasPrefix(s, "Event/") }); i >= 0 && i < isolated {
		t.Errorf("an Event at %d, before isolation: %v", i, log)
	}
	if i := indexOf(log, is("Event/Contained")); i < 0 {
		t.Errorf("no Contained Event: %v", log)
	}
	if q.Status.Evidence == nil {
		t.Fatal("no evidence")
	}
	if !maps.Equal(q.Status.Evidence.Labels, before) {
		t.Errorf("evidence labels %v, want the pod's before isolation %v", q.Status.Evidence.Labels, before)
	}
}

// TestEvidenceAfterCrashBetweenLabelAndEvidence: a manager killed right
// after the label write (evidence only in its memory) is followed by one
// whose evidence still shows the pod without the quarantine label.
func TestEvidenceAfterCrashBetweenLabelAndEvidence(t *testing.T) {
	f := newFixture(t, 1)
	before := getPod(t, f.pods[0]).Labels
	key := f.quarantine(t, "qe", f.pods[0].Name, isolateDNS())
	// finalizer, intent, NetworkPolicy, label; the fifth write fails.
	w := &writes{failAfter: 4}
	r, _ := newReconciler(w.client())
	if _, err := r.Reconcile(ctx, reqFor(key)); err == nil {
		t.Fatal("the pass did not reach the injected crash")
	}
	if got := getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel]; got != "qe" {
		t.Fatalf("pod label %q after the crashed pass, want it labelled", got)
	}
	if q := getQ(t, key); q.Status.Evidence != nil {
		t.Fatalf("evidence persisted before the crash: the crash is not between label and evidence")
	}
	r2, _ := newReconciler(direct)
	q := drive(t, r2, key, phaseIs(securityv1alpha1.PhaseContained))
	if q.Status.Evidence == nil || !maps.Equal(q.Status.Evidence.Labels, before) {
		t.Fatalf("evidence %+v, want the labels before isolation %v", q.Status.Evidence, before)
	}
}
