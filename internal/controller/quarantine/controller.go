// Package quarantine reconciles Quarantines: it applies containment actions
// and undoes them on release. The decisions live in internal/containment.
package quarantine

import (
	"context"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// QuarantineReconciler contains targets. Foundation only: it records that it
// saw the object; the containment engine is not wired in yet.
type QuarantineReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines/finalizers,verbs=update

// Reconcile records the observed generation and a Ready=False condition
// saying containment is not implemented.
func (r *QuarantineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	q := &securityv1alpha1.Quarantine{}
	if err := r.Get(ctx, req.NamespacedName, q); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patch := client.MergeFrom(q.DeepCopy())
	q.Status.ObservedGeneration = q.Generation
	if q.Status.Phase == "" {
		q.Status.Phase = securityv1alpha1.PhasePending
	}
	apimeta.SetStatusCondition(&q.Status.Conditions, metav1.Condition{
		Type: securityv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: "NotImplemented", Message: "containment engine not yet available",
		ObservedGeneration: q.Generation,
	})
	return ctrl.Result{}, r.Status().Patch(ctx, q, patch)
}

// SetupWithManager registers the controller.
func (r *QuarantineReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&securityv1alpha1.Quarantine{}).Named("quarantine").Complete(r)
}
