package quarantine

import (
	"context"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// eventually polls cond; the limit only bounds a broken run, it is no speed
// target.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// In a running manager the watches alone repair tampering: no periodic
// re-check is due within the test.
func TestManagerRepairsTamperingFromWatches(t *testing.T) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	must(t, startManager(mctx, nil))
	f := newFixture(t, 1)
	key := f.quarantine(t, "qw", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	eventually(t, "Contained", func() bool { return phaseIs(securityv1alpha1.PhaseContained)(getQ(t, key)) })

	npKey := client.ObjectKey{Namespace: f.ns, Name: "bulkhead-qw"}
	np := &networkingv1.NetworkPolicy{}
	must(t, direct.Get(ctx, npKey, np))
	must(t, direct.Delete(ctx, np))
	eventually(t, "NetworkPolicy recreated", func() bool {
		fresh := &networkingv1.NetworkPolicy{}
		return direct.Get(ctx, npKey, fresh) == nil && fresh.UID != np.UID
	})

	pod := getPod(t, f.pods[0])
	base := pod.DeepCopy()
	delete(pod.Labels, securityv1alpha1.QuarantineLabel)
	must(t, direct.Patch(ctx, pod, client.MergeFrom(base)))
	eventually(t, "label restored", func() bool { return getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] == "qw" })

	release(t, key)
	eventually(t, "Released", func() bool { return released(getQ(t, key)) })
}

// Only the controller's own appending of its finalizer is ignored; any
// other change (removed, replaced, someone else's) reconciles.
func TestFinalizersChangedByOthers(t *testing.T) {
	own := securityv1alpha1.QuarantineFinalizer
	for _, c := range []struct {
		name     string
		old, cur []string
		want     bool
	}{
		{"unchanged", []string{own}, []string{own}, false},
		{"own appended", nil, []string{own}, false},
		{"own appended after another", []string{"x/y"}, []string{"x/y", own}, false},
		{"own removed", []string{own}, nil, true},
		{"other added", []string{own}, []string{own, "x/y"}, true},
		{"own appended and other removed", []string{"x/y"}, []string{own}, true},
	} {
		if got := finalizersChangedByOthers(c.old, c.cur); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// Deleting or changing a third-party deny (issue 15 item 4) is repaired from
// a watch, not at the re-check (a minute away in startManager).
func TestManagerRepairsThirdPartyDenyFromWatches(t *testing.T) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	must(t, startManager(mctx, nil))
	f := newFixture(t, 1)
	key := f.quarantine(t, "qd", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	eventually(t, "Contained", func() bool { return phaseIs(securityv1alpha1.PhaseContained)(getQ(t, key)) })

	for _, fl := range containment.DenyFlavors {
		find := func() *unstructured.Unstructured {
			l := &unstructured.UnstructuredList{}
			l.SetGroupVersionKind(fl.GVK().GroupVersion().WithKind(fl.GVK().Kind + "List"))
			must(t, direct.List(ctx, l, client.MatchingLabels{securityv1alpha1.QuarantineLabel: "qd"}))
			for i := range l.Items {
				if k, ok := containment.DenyQuarantine(&l.Items[i]); ok && k == key {
					return &l.Items[i]
				}
			}
			return nil
		}
		u := find()
		if u == nil {
			t.Fatalf("no %s for the Quarantine", fl.GVK().Kind)
		}
		must(t, direct.Delete(ctx, u))
		eventually(t, fl.GVK().Kind+" recreated after deletion", func() bool {
			fresh := find()
			return fresh != nil && fresh.GetUID() != u.GetUID()
		})
		fresh := find()
		want := fresh.Object["spec"]
		if fl.GVK().Kind == "CiliumNetworkPolicy" {
			unstructured.RemoveNestedField(fresh.Object, "spec", "ingressDeny")
			must(t, unstructured.SetNestedField(fresh.Object, []any{}, "spec", "egressDeny"))
		} else {
			must(t, unstructured.SetNestedField(fresh.Object, []any{}, "spec", "ingress"))
		}
		must(t, direct.Update(ctx, fresh))
		eventually(t, fl.GVK().Kind+" restored after an edit", func() bool {
			again := find()
			return again != nil && equality.Semantic.DeepEqual(normalise(t, again.Object["spec"]), normalise(t, want))
		})
	}
	release(t, key)
	eventually(t, "Released", func() bool { return released(getQ(t, key)) })
}
