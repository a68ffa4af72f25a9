package quarantine

import (
	"fmt"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// setNotReady says why the Quarantine is not (yet) Ready.
func (p *pass) setNotReady(reason, msg string) {
	apimeta.SetStatusCondition(&p.q.Status.Conditions, metav1.Condition{
		Type: securityv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: kubeutil.Truncate(msg, kubeutil.MaxMessage), ObservedGeneration: p.q.Generation,
	})
}

// setConditions derives Ready, Contained and the kstatus Reconciling from
// the phase and the actions.
func (p *pass) setConditions() {
	q := p.q
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		apimeta.SetStatusCondition(&q.Status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: kubeutil.Truncate(msg, kubeutil.MaxMessage), ObservedGeneration: q.Generation})
	}
	switch q.Status.Phase {
	case securityv1alpha1.PhaseContained:
		set(securityv1alpha1.ConditionContained, metav1.ConditionTrue, securityv1alpha1.ReasonSucceeded, summary(q.Status.Actions))
		if failed := failedActions(q.Status.Actions); failed != "" {
			set(securityv1alpha1.ConditionReady, metav1.ConditionFalse, "ActionFailed", "contained, but "+failed)
		} else {
			set(securityv1alpha1.ConditionReady, metav1.ConditionTrue, securityv1alpha1.ReasonSucceeded, summary(q.Status.Actions))
		}
		apimeta.RemoveStatusCondition(&q.Status.Conditions, securityv1alpha1.ConditionReconciling)
	case securityv1alpha1.PhaseReleased:
		set(securityv1alpha1.ConditionContained, metav1.ConditionFalse, securityv1alpha1.ReasonReleased, summary(q.Status.Actions))
		set(securityv1alpha1.ConditionReady, metav1.ConditionTrue, securityv1alpha1.ReasonReleased, summary(q.Status.Actions))
		apimeta.RemoveStatusCondition(&q.Status.Conditions, securityv1alpha1.ConditionReconciling)
		apimeta.RemoveStatusCondition(&q.Status.Conditions, securityv1alpha1.ConditionIsolationEffective)
	default:
		set(securityv1alpha1.ConditionContained, metav1.ConditionFalse, securityv1alpha1.ReasonProgressing, summary(q.Status.Actions))
		set(securityv1alpha1.ConditionReady, metav1.ConditionFalse, securityv1alpha1.ReasonProgressing, "phase "+string(q.Status.Phase))
		set(securityv1alpha1.ConditionReconciling, metav1.ConditionTrue, securityv1alpha1.ReasonProgressing, "phase "+string(q.Status.Phase))
	}
}

func failedActions(sts []securityv1alpha1.ActionStatus) string {
	out := ""
	for _, s := range sts {
		if s.State == securityv1alpha1.ActionFailed {
			out += fmt.Sprintf("%s failed: %s; ", s.Type, s.Message)
		}
	}
	return out
}

// recordPhase counts a phase reached and, for Contained, the time it took.
// The active gauge moves at once; the janitor recounts it after restarts.
func recordPhase(q *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase, now time.Time) {
	if from != "" && from != securityv1alpha1.PhaseReleased {
		metrics.ActiveQuarantines.WithLabelValues(q.Namespace, string(from)).Dec()
	}
	if to != securityv1alpha1.PhaseReleased {
		metrics.ActiveQuarantines.WithLabelValues(q.Namespace, string(to)).Inc()
	}
	reason := ""
	if c := apimeta.FindStatusCondition(q.Status.Conditions, securityv1alpha1.ConditionReady); c != nil {
		reason = c.Reason
	}
	metrics.QuarantinesTotal.WithLabelValues(string(to), reason).Inc()
	if to == securityv1alpha1.PhaseContained {
		metrics.TimeToContain.Observe(now.Sub(q.CreationTimestamp.Time).Seconds())
	}
}
