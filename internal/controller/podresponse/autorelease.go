package podresponse

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// autoRelease releases a policy's Quarantine once autoReleaseAfter is due
// and the score has fallen below every contributor's threshold; otherwise
// it extends by autoReleaseAfter and says so.
func (r *Reconciler) autoRelease(ctx context.Context, w *world) (ctrl.Result, error) {
	q := w.env.Existing
	if q == nil {
		return ctrl.Result{}, nil
	}
	due, ok := policy.AutoReleaseDue(q)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := due.Sub(w.env.Now); wait > 0 {
		return ctrl.Result{RequeueAfter: kubeutil.Jitter(wait)}, nil
	}
	var evals []policy.Evaluation
	for _, name := range q.Spec.Reason.Policies {
		if p, ok := w.policies[name]; ok {
			evals = append(evals, r.Evaluator.Evaluate(ctx, p, w.pod))
		}
	}
	if policy.FallenBelow(evals) {
		if err := r.apply(ctx, q, map[string]string{securityv1alpha1.ActorAnnotation: policy.AutoReleaseActor},
			map[string]any{"released": true}); err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(q, w.pod, corev1.EventTypeNormal, "AutoReleased", "Release",
			"autoReleaseAfter %s passed and the score has fallen below the threshold", q.Spec.AutoReleaseAfter.Duration)
		return ctrl.Result{}, nil
	}
	next := w.env.Now.Add(q.Spec.AutoReleaseAfter.Duration)
	if err := r.apply(ctx, q, map[string]string{policy.AutoReleaseAtAnnotation: next.UTC().Format(time.RFC3339)}, nil); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(q, w.pod, corev1.EventTypeWarning, "AutoReleaseExtended", "Extend",
		"the score is still at or above the threshold: auto-release extended to %s", next.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: kubeutil.Jitter(q.Spec.AutoReleaseAfter.Duration)}, nil
}
