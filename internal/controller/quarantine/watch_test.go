package quarantine

import (
	"context"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
		// A copy: the edits below change fresh's maps in place. (Aliased,
		// the check compared against the edited spec and passed only when
		// it ran before the repair.)
		want := runtime.DeepCopyJSONValue(fresh.Object["spec"])
		if fl.GVK().Kind == "CiliumNetworkPolicy" {
			unstructured.RemoveNestedField(fresh.Object, "spec", "ingressDeny")
			must(t, unstructured.SetNestedField(fresh.Object, []any{}, "spec", "egressDeny"))
		} else {
			must(t, unstructured.SetNestedField(fresh.Object, []any{}, "spec", "ingress"))
		}
		if equality.Semantic.DeepEqual(normalise(t, fresh.Object["spec"]), normalise(t, want)) {
			t.Fatalf("%s: the edit changes nothing", fl.GVK().Kind)
		}
		must(t, direct.Update(ctx, fresh))
		eventually(t, fl.GVK().Kind+" restored after an edit", func() bool {
			again := find()
			return again != nil && again.GetGeneration() > fresh.GetGeneration() &&
				equality.Semantic.DeepEqual(normalise(t, again.Object["spec"]), normalise(t, want))
		})
	}
	release(t, key)
	eventually(t, "Released", func() bool { return released(getQ(t, key)) })
}

// Tampering between the manager's start and the deny watches' first sync
// raises no event: once synced, every Quarantine in force gets a pass of
// its own, with nothing changed.
func TestDenyWatchesPassQuarantinesInForceOnceSynced(t *testing.T) {
	f := newFixture(t, 1)
	key := f.quarantine(t, "qs", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))

	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: direct.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	must(t, err)
	var seen sync.Map
	c, err := controller.New("deny-requeue", mgr, controller.Options{
		SkipNameValidation: new(true),
		Reconciler: reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
			seen.Store(req.NamespacedName, true)
			return reconcile.Result{}, nil
		}),
	})
	must(t, err)
	must(t, mgr.Add(&denyWatches{mgr: mgr, c: c}))
	go func() { _ = mgr.Start(mctx) }()
	eventually(t, "a pass for the Quarantine in force", func() bool { _, ok := seen.Load(key); return ok })
}

func TestRequeueInForceSkipsReleased(t *testing.T) {
	in, done := &securityv1alpha1.Quarantine{}, &securityv1alpha1.Quarantine{}
	in.Name, in.Namespace = "in", "shop"
	done.Name, done.Namespace = "done", "shop"
	done.Status.Phase = securityv1alpha1.PhaseReleased
	c := fake.NewClientBuilder().WithScheme(direct.Scheme()).WithObjects(in, done).Build()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	must(t, requeueInForce(ctx, c, q))
	if q.Len() != 1 {
		t.Fatalf("queued %d, want only the Quarantine in force", q.Len())
	}
	if got, _ := q.Get(); got.NamespacedName != client.ObjectKeyFromObject(in) {
		t.Fatalf("queued %v, want %v", got, client.ObjectKeyFromObject(in))
	}
}

// A pod held by two Quarantines (its Deployment's and its own) carries the
// first one's label; the second one's policy selects its own. Releasing the
// first takes the label away, and the second puts its own at once, not at
// its re-check.
func TestReleasingOneHolderRelabelsForTheOther(t *testing.T) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	must(t, startManager(mctx, nil))
	f := newFixture(t, 1)
	qd := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "qdep", Namespace: f.ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetDeployment, Name: f.dep.Name},
			Actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)},
		},
	}
	must(t, direct.Create(ctx, qd))
	dkey := client.ObjectKeyFromObject(qd)
	eventually(t, "the Deployment's Quarantine Contained", func() bool { return phaseIs(securityv1alpha1.PhaseContained)(getQ(t, dkey)) })
	pkey := f.quarantine(t, "qpod", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	eventually(t, "the pod's Quarantine Contained", func() bool { return phaseIs(securityv1alpha1.PhaseContained)(getQ(t, pkey)) })
	if l := getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel]; l != "qdep" {
		t.Fatalf("pod labelled %q, want the first holder's", l)
	}

	release(t, dkey)
	eventually(t, "the Deployment's Quarantine Released", func() bool { return released(getQ(t, dkey)) })
	eventually(t, "the pod labelled by the Quarantine still holding it", func() bool {
		return getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel] == "qpod"
	})
	release(t, pkey)
	eventually(t, "the pod's Quarantine Released", func() bool { return released(getQ(t, pkey)) })
	if l, ok := getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatalf("pod still labelled %q after both released", l)
	}
}
