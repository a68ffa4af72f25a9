package quarantine

import (
	"context"
	"maps"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=adminnetworkpolicies;clusternetworkpolicies,verbs=watch
// +kubebuilder:rbac:groups=cilium.io,resources=ciliumnetworkpolicies,verbs=list;watch
// +kubebuilder:rbac:groups=crd.projectcalico.org,resources=globalnetworkpolicies,verbs=watch

// denyWatches re-queues a Quarantine when one of its third-party deny
// objects (AdminNetworkPolicy, ClusterNetworkPolicy, Cilium, Calico) is
// deleted or changed, so tampering is repaired at once rather than at the
// next re-check. Which kinds are served is known only once the API server
// answers, so the watches are added when the manager runs (setup must not
// need the API server). Only kinds served then are watched (metadata only:
// the labels say whose object it is); a network plugin installed later is
// picked up at the next manager start, and by the re-check until then.
type denyWatches struct {
	mgr ctrl.Manager
	c   controller.Controller
}

func (w *denyWatches) Start(ctx context.Context) error {
	b := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: time.Minute}
	var served []schema.GroupVersionKind
	err := wait.ExponentialBackoffWithContext(ctx, b, func(context.Context) (bool, error) {
		served = served[:0]
		for _, f := range containment.DenyFlavors {
			ok, err := f.Served(w.mgr.GetRESTMapper())
			if err != nil {
				ctrl.Log.WithName("quarantine").Error(err, "finding the served network policy APIs; retrying")
				return false, nil
			}
			if ok {
				served = append(served, f.GVK())
			}
		}
		return true, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var sources []source.SyncingSource
	for _, gvk := range served {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(gvk)
		src := source.Kind(w.mgr.GetCache(), m, handler.TypedEnqueueRequestsFromMapFunc(denyToQuarantine), denyTampered)
		if err := w.c.Watch(src); err != nil {
			return err
		}
		sources = append(sources, src)
	}
	if len(sources) == 0 {
		return nil
	}
	for _, src := range sources {
		if err := src.WaitForSync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	// The controller's first passes may have run before these watches saw
	// anything: tampering in between raised no event. One more pass for
	// each Quarantine still in force closes that gap.
	return w.c.Watch(source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		return requeueInForce(ctx, w.mgr.GetCache(), q)
	}))
}

// requeueInForce queues every Quarantine that is not yet released.
func requeueInForce(ctx context.Context, r client.Reader, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	l := &securityv1alpha1.QuarantineList{}
	if err := r.List(ctx, l); err != nil {
		return err
	}
	for i := range l.Items {
		if l.Items[i].Status.Phase != securityv1alpha1.PhaseReleased {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l.Items[i])})
		}
	}
	return nil
}

func denyToQuarantine(_ context.Context, o *metav1.PartialObjectMetadata) []reconcile.Request {
	key, ok := containment.DenyQuarantine(o)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// denyTampered passes deletions and spec or label changes, not the
// controller's own creations.
var denyTampered = predicate.TypedFuncs[*metav1.PartialObjectMetadata]{
	CreateFunc: func(event.TypedCreateEvent[*metav1.PartialObjectMetadata]) bool { return false },
	UpdateFunc: func(e event.TypedUpdateEvent[*metav1.PartialObjectMetadata]) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
			!maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
	},
}
