// Package threatpolicy reconciles ThreatPolicies: it turns scores into Quarantines.
package threatpolicy

import (
	"context"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// ThreatPolicyReconciler turns scores into Quarantines. Foundation only: it records that it
// saw the object; scoring is not wired in yet.
type ThreatPolicyReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=threatpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=threatpolicies/status,verbs=get;update;patch

// Reconcile records the observed generation and a Ready=False condition
// saying policy evaluation is not implemented.
func (r *ThreatPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &securityv1alpha1.ThreatPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Status.ObservedGeneration = p.Generation
	apimeta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: securityv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: "NotImplemented", Message: "policy evaluation not yet available",
		ObservedGeneration: p.Generation,
	})
	return ctrl.Result{}, r.Status().Patch(ctx, p, patch)
}

// SetupWithManager registers the controller.
func (r *ThreatPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&securityv1alpha1.ThreatPolicy{}).Named("threatpolicy").Complete(r)
}
