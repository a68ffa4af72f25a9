package podresponse

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

// create writes the new Quarantine under its reserved name. Create, not
// apply: it must fail when the name was taken meanwhile, so another name is
// tried (and reserved instead).
func (r *Reconciler) create(ctx context.Context, w *world, spec *securityv1alpha1.QuarantineSpec, key types.NamespacedName) (string, error) {
	spec.Target = securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: w.pod.Name}
	for range 10 {
		q := &securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
				// The Quarantine controller's finalizer comes with the
				// create: its first pass then writes the intent at once
				// instead of a finalizer patch and its round trip.
				Finalizers: []string{securityv1alpha1.QuarantineFinalizer},
				Labels: map[string]string{
					securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue,
					securityv1alpha1.PolicyLabel:    spec.Reason.Policy,
				},
				Annotations: map[string]string{
					securityv1alpha1.CreatedByPolicyAnnotation:    spec.Reason.Policy,
					securityv1alpha1.ArgoCompareOptionsAnnotation: securityv1alpha1.ArgoCompareOptionsValue,
					securityv1alpha1.FluxReconcileAnnotation:      securityv1alpha1.FluxReconcileValue,
				},
			},
			Spec: *spec,
		}
		q.Annotations[provenance.Annotation] = w.signer.Sign(q)
		if r.Handoff != nil {
			r.Handoff.Creating(key)
		}
		err := r.Create(ctx, q, client.FieldOwner(securityv1alpha1.FieldManager))
		if err != nil && r.Handoff != nil {
			r.Handoff.Abandoned(key)
		}
		if apierrors.IsAlreadyExists(err) {
			key = r.reserveAgain(w, spec, key)
			continue
		}
		if err != nil && !r.createdAnyway(ctx, key, w.pod.Name, err) {
			return "", fmt.Errorf("creating Quarantine %s/%s: %w", key.Namespace, key.Name, err)
		}
		logf.FromContext(ctx).Info("quarantine created", "quarantine", key.Name, "policies", spec.Reason.Policies, "score", spec.Reason.Score)
		pod := w.pod
		event := func() {
			r.Recorder.Eventf(pod, q, corev1.EventTypeWarning, "Quarantined", "Create",
				"policies %v scored this pod %s: Quarantine %s", spec.Reason.Policies, spec.Reason.Score, key.Name)
		}
		if r.Handoff != nil && err == nil {
			// Its isolation starts now; the Event waits for it.
			r.Handoff.Created(q, event)
		} else {
			event()
		}
		return key.Name, nil
	}
	r.pending.dropCreate(key)
	return "", fmt.Errorf("no free Quarantine name for pod %s/%s", w.pod.Namespace, w.pod.Name)
}

// createdAnyway settles a failed create. A refusal gives the slot back; a
// timeout or a lost connection may have created it all the same, so the
// API server is asked: found for this pod, it counts as created; found
// missing, the slot is given back; unknown, the slot stays counted until
// unseenGrace (the pod is decided again then).
func (r *Reconciler) createdAnyway(ctx context.Context, key types.NamespacedName, pod string, err error) bool {
	if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsNotFound(err) || apierrors.IsUnauthorized(err) || apierrors.IsMethodNotSupported(err) {
		r.pending.dropCreate(key)
		return false
	}
	q := &securityv1alpha1.Quarantine{}
	switch gerr := r.APIReader.Get(ctx, key, q); {
	case gerr == nil && q.Spec.Target.Name == pod:
		return true
	case apierrors.IsNotFound(gerr):
		r.pending.dropCreate(key)
	}
	return false
}

// applySpec writes the fields the policy decision owns on its own
// Quarantine: actions, reason, autoReleaseAfter and safeguards (never
// approved or released, which humans flip).
func (r *Reconciler) applySpec(ctx context.Context, q *securityv1alpha1.Quarantine, spec *securityv1alpha1.QuarantineSpec) error {
	fields := map[string]any{"actions": spec.Actions, "reason": spec.Reason}
	if spec.AutoReleaseAfter != nil {
		fields["autoReleaseAfter"] = spec.AutoReleaseAfter
	}
	if spec.Safeguards != nil {
		fields["safeguards"] = spec.Safeguards
	}
	return r.apply(ctx, q, nil, fields)
}

// escalate adds the actions the policies call for to a hand-made
// Quarantine: the actions list only (its entries are keyed by type, so the
// author's keep their owner), with an Event on it and on the pod; the
// Quarantine controller audits the new actions when it plans them.
func (r *Reconciler) escalate(ctx context.Context, w *world, spec *securityv1alpha1.QuarantineSpec) error {
	q := w.env.Existing
	if err := r.apply(ctx, q, nil, map[string]any{"actions": spec.Actions}); err != nil {
		return err
	}
	var added []securityv1alpha1.ActionType
	for _, a := range spec.Actions {
		if !slices.ContainsFunc(q.Spec.Actions, func(h securityv1alpha1.Action) bool { return h.Type == a.Type }) {
			added = append(added, a.Type)
		}
	}
	logf.FromContext(ctx).Info("hand-made quarantine escalated by policy", "quarantine", q.Name, "added", added)
	r.Recorder.Eventf(q, w.pod, corev1.EventTypeWarning, "PolicyEscalated", "Escalate",
		"a ThreatPolicy's threshold held for this pod: added %v to this hand-made Quarantine", added)
	r.Recorder.Eventf(w.pod, q, corev1.EventTypeWarning, "PolicyEscalated", "Escalate",
		"a ThreatPolicy added %v to Quarantine %s", added, q.Name)
	return nil
}

// apply server-side applies metadata annotations and spec fields to q.
func (r *Reconciler) apply(ctx context.Context, q *securityv1alpha1.Quarantine, annotations map[string]string, spec map[string]any) error {
	obj := map[string]any{
		"apiVersion": securityv1alpha1.GroupVersion.String(), "kind": "Quarantine",
		"metadata": map[string]any{"name": q.Name, "namespace": q.Namespace, "uid": string(q.UID)},
	}
	if len(annotations) > 0 {
		obj["metadata"].(map[string]any)["annotations"] = annotations
	}
	if len(spec) > 0 {
		obj["spec"] = spec
	}
	u, err := kubeutil.FromMap(obj)
	if err != nil {
		return err
	}
	if err := kubeutil.Apply(ctx, r.Client, u); err != nil {
		return fmt.Errorf("applying Quarantine %s/%s: %w", q.Namespace, q.Name, err)
	}
	return nil
}

// recommend appends escalations not already recommended to the
// Quarantine's spec.recommendations (a merge patch of that list only); the
// Quarantine controller, status's one writer, reports them in status.
func (r *Reconciler) recommend(ctx context.Context, q *securityv1alpha1.Quarantine, recs []securityv1alpha1.Recommendation) error {
	// q is a read-only view of the cache: append to a copy.
	have := slices.Clone(q.Spec.Recommendations)
	changed := false
	for _, rec := range recs {
		if slices.ContainsFunc(have, func(h securityv1alpha1.Recommendation) bool {
			return h.Policy == rec.Policy && slices.Equal(h.Actions, rec.Actions)
		}) {
			continue
		}
		have = append(have, rec)
		changed = true
		r.Recorder.Eventf(q, nil, corev1.EventTypeWarning, "EscalationRecommended", "Recommend",
			"policy %s reached score %s: consider adding %v", rec.Policy, rec.Score, rec.Actions)
	}
	if !changed {
		return nil
	}
	if len(have) > 10 {
		have = have[len(have)-10:]
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"recommendations": have}})
	if err != nil {
		return err
	}
	// A fresh object: Patch decodes the reply into it, and q belongs to the cache.
	target := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: q.Namespace, Name: q.Name}}
	return r.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(securityv1alpha1.FieldManager))
}
