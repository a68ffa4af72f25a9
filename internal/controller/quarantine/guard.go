package quarantine

import (
	"context"
	"fmt"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Without the Quarantine admission guard (config/admission), any user who
// may create Quarantines may also forge their attribution, approve without
// the approve verb, and so on; the destructive actions are the ones worth
// forging for. So when the guard is missing, hand-made destructive actions
// are refused; a policy's (signed by the manager, internal/provenance)
// still apply.

// ReasonAdmissionGuardMissing refuses a hand-made destructive action.
const ReasonAdmissionGuardMissing = "AdmissionGuardMissing"

// ConditionAdmissionGuarded says whether the guard was in force when the
// actions were planned.
const ConditionAdmissionGuarded = "AdmissionGuarded"

// guardLabel marks the guard on every install path (kustomize, Helm, OLM).
const guardLabel = "app.kubernetes.io/name"

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch

// The custom verb attribute on quarantines, cluster-wide, is how the guard
// recognises the manager (it writes the attribution tenants may not); no
// shipped role for people grants it.
// +kubebuilder:rbac:groups=security.bulkhead.dev,resources=quarantines,verbs=attribute

// GuardInstalled reports whether the Quarantine admission guard is in
// force: a ValidatingAdmissionPolicy labelled app.kubernetes.io/name=bulkhead
// that matches quarantines of security.bulkhead.dev and fails closed, and a
// binding that names it and denies. Names are not trusted: install paths
// prefix them.
func GuardInstalled(policies []admissionregistrationv1.ValidatingAdmissionPolicy, bindings []admissionregistrationv1.ValidatingAdmissionPolicyBinding) bool {
	for i := range policies {
		p := &policies[i]
		if p.Labels[guardLabel] != "bulkhead" || !p.DeletionTimestamp.IsZero() || !matchesQuarantines(p.Spec) {
			continue
		}
		if fp := p.Spec.FailurePolicy; fp != nil && *fp != admissionregistrationv1.Fail {
			continue
		}
		for j := range bindings {
			b := &bindings[j]
			if b.Spec.PolicyName == p.Name && b.DeletionTimestamp.IsZero() && slices.Contains(b.Spec.ValidationActions, admissionregistrationv1.Deny) {
				return true
			}
		}
	}
	return false
}

func matchesQuarantines(s admissionregistrationv1.ValidatingAdmissionPolicySpec) bool {
	if s.MatchConstraints == nil {
		return false
	}
	for _, r := range s.MatchConstraints.ResourceRules {
		if (slices.Contains(r.APIGroups, securityv1alpha1.GroupVersion.Group) || slices.Contains(r.APIGroups, "*")) &&
			(slices.Contains(r.Resources, "quarantines") || slices.Contains(r.Resources, "*")) &&
			(slices.Contains(r.Operations, admissionregistrationv1.Create) || slices.Contains(r.Operations, admissionregistrationv1.OperationAll)) {
			return true
		}
	}
	return false
}

// RefuseUnguarded reports whether an action must be refused: destructive,
// on a Quarantine the manager did not make, with no guard in force.
func RefuseUnguarded(t securityv1alpha1.ActionType, madeByPolicy, guarded bool) bool {
	return policy.Destructive(t) && !madeByPolicy && !guarded
}

// guardInstalled reads the guard's objects (from the cache in the manager).
func (r *QuarantineReconciler) guardInstalled(ctx context.Context) (bool, error) {
	var ps admissionregistrationv1.ValidatingAdmissionPolicyList
	if err := r.List(ctx, &ps); err != nil {
		return false, fmt.Errorf("reading ValidatingAdmissionPolicies: %w", err)
	}
	var bs admissionregistrationv1.ValidatingAdmissionPolicyBindingList
	if err := r.List(ctx, &bs); err != nil {
		return false, fmt.Errorf("reading ValidatingAdmissionPolicyBindings: %w", err)
	}
	return GuardInstalled(ps.Items, bs.Items), nil
}

// checkGuard refuses a hand-made destructive action being planned when the
// guard is missing, with a condition, a metric and an Event. Only
// destructive actions read the guard.
func (p *pass) checkGuard(ctx context.Context, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) error {
	if !policy.Destructive(a.Type) {
		return nil
	}
	made := false
	if p.r.Provenance != nil {
		signer, err := p.r.Provenance.Signer(ctx)
		if err != nil {
			return err
		}
		made = signer.Made(p.q)
	}
	guarded, err := p.r.guardInstalled(ctx)
	if err != nil {
		return err
	}
	cond := metav1.Condition{Type: ConditionAdmissionGuarded, Status: metav1.ConditionTrue, Reason: "GuardInstalled",
		Message: "the Quarantine admission guard is in force", ObservedGeneration: p.q.Generation}
	if !guarded {
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonAdmissionGuardMissing
		cond.Message = "the Quarantine admission guard (ValidatingAdmissionPolicy and binding, config/admission) is not installed: hand-made destructive actions are refused"
	}
	apimeta.SetStatusCondition(&p.q.Status.Conditions, cond)
	if !RefuseUnguarded(a.Type, made, guarded) {
		return nil
	}
	st.State, st.Message = securityv1alpha1.ActionRefused, ReasonAdmissionGuardMissing+": "+cond.Message
	metrics.AdmissionGuardMissing.WithLabelValues(string(a.Type)).Inc()
	p.quarantineEvent(corev1.EventTypeWarning, ReasonAdmissionGuardMissing, string(a.Type), st.Message)
	return nil
}
