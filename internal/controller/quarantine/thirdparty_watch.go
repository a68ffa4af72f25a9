package quarantine

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

// watchThirdPartyDenies re-queues a Quarantine when one of its third-party
// deny objects (AdminNetworkPolicy, ClusterNetworkPolicy, Cilium, Calico)
// is deleted or changed, so tampering is repaired at once rather than at
// the next re-check. Only kinds served when the manager starts are watched
// (metadata only: the labels say whose object it is); a network plugin
// installed later is picked up at the next manager start, and by the
// re-check until then.
func watchThirdPartyDenies(mgr ctrl.Manager, b *builder.Builder) (*builder.Builder, error) {
	for _, f := range containment.DenyFlavors {
		ok, err := f.Served(mgr.GetRESTMapper())
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(f.GVK())
		b = b.Watches(m, handler.EnqueueRequestsFromMapFunc(denyToQuarantine),
			builder.OnlyMetadata, builder.WithPredicates(denyTampered))
	}
	return b, nil
}

func denyToQuarantine(_ context.Context, o client.Object) []reconcile.Request {
	key, ok := containment.DenyQuarantine(o)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// denyTampered passes deletions and spec or label changes, not the
// controller's own creations.
var denyTampered = predicate.And(
	predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }},
	predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
		predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}),
)

// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=adminnetworkpolicies;clusternetworkpolicies,verbs=watch
// +kubebuilder:rbac:groups=cilium.io,resources=ciliumnetworkpolicies,verbs=list;watch
// +kubebuilder:rbac:groups=crd.projectcalico.org,resources=globalnetworkpolicies,verbs=watch
