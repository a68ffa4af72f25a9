package quarantine

// The Quarantine lifecycle rules: pure functions of status, unit-tested
// without a cluster; the steps in phases.go apply them.

import (
	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// phaseOf derives a Quarantine's phase from its actions: Contained when at
// least one is Applied and the rest Applied or Refused; Failed when none
// could be applied; otherwise still Containing. A Failed action beside an
// Applied one leaves it Contained (Ready says what failed): retrying cannot
// fix it, and Containing would never end.
func phaseOf(actions []securityv1alpha1.ActionStatus) securityv1alpha1.QuarantinePhase {
	applied, settled := 0, 0
	for _, a := range actions {
		switch a.State {
		case securityv1alpha1.ActionApplied:
			applied++
			settled++
		case securityv1alpha1.ActionRefused, securityv1alpha1.ActionFailed:
			settled++
		}
	}
	switch {
	case len(actions) == 0 || settled < len(actions):
		return securityv1alpha1.PhaseContaining
	case applied == 0:
		return securityv1alpha1.PhaseFailed
	default:
		return securityv1alpha1.PhaseContained
	}
}

// needsRevert reports whether release must undo an action. Pending and
// Failed actions are reverted too: a crash may have left part of them.
func needsRevert(st securityv1alpha1.ActionStatus) bool {
	switch st.State {
	case securityv1alpha1.ActionRefused, securityv1alpha1.ActionReverted, securityv1alpha1.ActionNotReverted:
		return false
	}
	return true
}

// earlierHolder names another unreleased Quarantine for the same target that
// came first (by creation time, then name), or "". The order is total, so
// two Quarantines racing each see the same winner. An unapproved one holds
// nothing (it applies nothing): it must not make a pod immune.
func earlierHolder(q *securityv1alpha1.Quarantine, all []securityv1alpha1.Quarantine) string {
	for i := range all {
		o := &all[i]
		if o.UID == q.UID || o.IsReleased() || !o.IsApproved() || !o.DeletionTimestamp.IsZero() || kubeutil.TargetKind(o.Spec.Target) != kubeutil.TargetKind(q.Spec.Target) || o.Spec.Target.Name != q.Spec.Target.Name {
			continue
		}
		switch o.Status.Phase {
		case securityv1alpha1.PhaseFailed, securityv1alpha1.PhaseReleased:
			continue
		}
		if o.CreationTimestamp.Before(&q.CreationTimestamp) || (o.CreationTimestamp.Equal(&q.CreationTimestamp) && o.Name < q.Name) {
			return o.Name
		}
	}
	return ""
}
