package podresponse

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// AutoReleaseReasonAnnotation records why the manager auto-released a
// Quarantine (policy.VerdictFell or ReleasedWithoutEvidence), for audit.
const AutoReleaseReasonAnnotation = "security.bulkhead.dev/auto-release-reason"

// ReasonReleasedWithoutEvidence: auto-released by the policy's fallback
// (release.releaseWithoutEvidenceAfter), nothing saying the score fell.
const ReasonReleasedWithoutEvidence = "ReleasedWithoutEvidence"

// autoRelease releases the pod's policy Quarantine once it is due and there
// is positive evidence the score fell (or the policy's fallback passed);
// otherwise it extends by autoReleaseAfter and says so.
func (r *Reconciler) autoRelease(ctx context.Context, w *world) (ctrl.Result, error) {
	q := w.env.Existing
	if q == nil || !w.signer.Made(q) {
		return ctrl.Result{}, nil
	}
	return r.autoReleaseOne(ctx, q, w.pod, w.policies, w.env.Now)
}

// autoReleaseGone drives auto-release for the policy Quarantines of a pod
// that is gone (ScaleToZero or Evict removed it): the Quarantine, not the
// pod, holds the timer.
func (r *Reconciler) autoReleaseGone(ctx context.Context, key types.NamespacedName) (ctrl.Result, error) {
	signer, err := r.Provenance.Signer(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var qs securityv1alpha1.QuarantineList
	if err := r.List(ctx, &qs, client.InNamespace(key.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	var tps securityv1alpha1.ThreatPolicyList
	if err := r.List(ctx, &tps); err != nil {
		return ctrl.Result{}, err
	}
	policies := make(map[string]*securityv1alpha1.ThreatPolicy, len(tps.Items))
	for i := range tps.Items {
		policies[tps.Items[i].Name] = &tps.Items[i]
	}
	var res ctrl.Result
	for i := range qs.Items {
		q := &qs.Items[i]
		if q.Spec.Target.Name != key.Name || kubeutil.TargetKind(q.Spec.Target) != securityv1alpha1.TargetPod || q.IsReleased() || !signer.Made(q) {
			continue
		}
		one, err := r.autoReleaseOne(ctx, q, nil, policies, r.Now())
		if err != nil {
			return ctrl.Result{}, err
		}
		if one.RequeueAfter > 0 && (res.RequeueAfter == 0 || one.RequeueAfter < res.RequeueAfter) {
			res = one
		}
	}
	return res, nil
}

// autoReleaseOne decides one due Quarantine. pod is nil when the target
// is gone: then the pods of its workload are what the detectors can speak
// about.
func (r *Reconciler) autoReleaseOne(ctx context.Context, q *securityv1alpha1.Quarantine, pod *corev1.Pod,
	policies map[string]*securityv1alpha1.ThreatPolicy, now time.Time) (ctrl.Result, error) {
	contributors := make([]*securityv1alpha1.ThreatPolicy, 0, len(q.Spec.Reason.Policies))
	for _, name := range q.Spec.Reason.Policies {
		contributors = append(contributors, policies[name]) // nil: gone, which holds it
	}
	due, ok := policy.AutoReleaseDue(q, contributors)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := due.Sub(now); wait > 0 {
		return ctrl.Result{RequeueAfter: kubeutil.Jitter(wait)}, nil
	}
	pods := []*corev1.Pod{pod}
	subject := "the pod"
	if pod == nil {
		var err error
		if pods, err = r.workloadPods(ctx, q); err != nil {
			return ctrl.Result{}, err
		}
		subject = fmt.Sprintf("the pod is gone; %d pod(s) of its workload %s", len(pods), workloadOf(q))
	}
	var evals []policy.Evaluation
	for _, p := range pods {
		for _, tp := range contributors {
			evals = append(evals, r.Evaluator.Evaluate(ctx, tp, p))
		}
	}
	verdict := policy.JudgeRelease(evals, q.Spec.Reason.Detector)
	var about runtime.Object
	if pod != nil {
		about = pod
	}
	switch {
	case verdict == policy.VerdictFell:
		return ctrl.Result{}, r.release(ctx, q, about, string(policy.VerdictFell),
			fmt.Sprintf("autoReleaseAfter passed and the detectors report below the threshold (%s)", subject))
	case verdict == policy.VerdictNoEvidence && policy.ReleaseWithoutEvidenceDue(q, contributors, now):
		return ctrl.Result{}, r.release(ctx, q, about, ReasonReleasedWithoutEvidence,
			fmt.Sprintf("no evidence that the score fell (%s; no fresh score from %s), released by the policy's releaseWithoutEvidenceAfter", subject, orAny(q.Spec.Reason.Detector)))
	}
	after, _ := policy.AutoReleaseAfter(q, contributors)
	next := now.Add(after)
	if err := r.apply(ctx, q, map[string]string{policy.AutoReleaseAtAnnotation: next.UTC().Format(time.RFC3339)}, nil); err != nil {
		return ctrl.Result{}, err
	}
	why := "the score is still at or above the threshold"
	if verdict == policy.VerdictNoEvidence {
		why = fmt.Sprintf("nothing says the score fell (%s; no fresh score from %s)", subject, orAny(q.Spec.Reason.Detector))
	}
	r.Recorder.Eventf(q, about, corev1.EventTypeWarning, "AutoReleaseExtended", "Extend",
		"%s: auto-release extended to %s", why, next.UTC().Format(time.RFC3339))
	return ctrl.Result{RequeueAfter: kubeutil.Jitter(after)}, nil
}

// release sets spec.released as the auto-release actor, with the reason,
// and says so in an Event.
func (r *Reconciler) release(ctx context.Context, q *securityv1alpha1.Quarantine, about runtime.Object, reason, msg string) error {
	if err := r.apply(ctx, q, map[string]string{securityv1alpha1.ActorAnnotation: policy.AutoReleaseActor, AutoReleaseReasonAnnotation: reason},
		map[string]any{"released": true}); err != nil {
		return err
	}
	r.Recorder.Eventf(q, about, corev1.EventTypeNormal, "AutoReleased", "Release", "%s: %s", reason, msg)
	return nil
}

// workloadPods are the live pods of a gone target's workload (the top
// owner recorded in status.target), read from the cache.
func (r *Reconciler) workloadPods(ctx context.Context, q *securityv1alpha1.Quarantine) ([]*corev1.Pod, error) {
	owner := workloadOf(q)
	if owner == "" {
		return nil, nil
	}
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(q.Namespace)); err != nil {
		return nil, err
	}
	replicaSets := map[string]string{} // ReplicaSet name -> its top owner
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || !p.DeletionTimestamp.IsZero() {
			continue
		}
		top := ref.Kind + "/" + ref.Name
		if ref.Kind == "ReplicaSet" {
			t, ok := replicaSets[ref.Name]
			if !ok {
				var err error
				if t, err = r.replicaSetOwner(ctx, q.Namespace, ref.Name); err != nil {
					return nil, err
				}
				replicaSets[ref.Name] = t
			}
			top = t
		}
		if top == owner {
			out = append(out, p)
		}
	}
	return out, nil
}

func workloadOf(q *securityv1alpha1.Quarantine) string {
	if q.Status.Target == nil {
		return ""
	}
	return q.Status.Target.Owner
}

func orAny(det string) string {
	if det == "" {
		return "any detector"
	}
	return det
}

// replicaSetOwner is a ReplicaSet's top owner as Kind/name (its
// Deployment), read live as metadata only: this runs only for a gone
// target whose auto-release is due.
func (r *Reconciler) replicaSetOwner(ctx context.Context, namespace, name string) (string, error) {
	rs := &metav1.PartialObjectMetadata{}
	rs.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, rs); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	if ref := metav1.GetControllerOf(rs); ref != nil {
		return ref.Kind + "/" + ref.Name, nil
	}
	return "ReplicaSet/" + name, nil
}
