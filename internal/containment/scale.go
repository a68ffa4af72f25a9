package containment

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// scaleTarget is the workload ScaleToZero acts on: from the live target, or
// from the status once the pod is gone.
func scaleTarget(s *Scope, st *securityv1alpha1.ActionStatus) (ObjectRef, string) {
	if s.Target != nil {
		switch {
		case s.Target.Workload != nil:
			return *s.Target.Workload, ""
		case s.Target.BrokenChain != "":
			return ObjectRef{}, s.Target.BrokenChain
		default:
			// A pod Bulkhead detached has lost its owner since; the owner
			// recorded at creation is still the workload to scale.
			if ref, ok := detachedOwner(s); ok {
				return ref, ""
			}
			return ObjectRef{}, "the pod has no controller to scale; use Evict or Isolate"
		}
	}
	if ref, ok := parseResource(st.Resource, st.ResourceAPIVersion); ok {
		return ref, ""
	}
	return ObjectRef{}, "the target is gone"
}

// detachedOwner is the owner recorded when the Quarantine resolved its
// target, for a pod this Quarantine's Detach has taken out of it. Only
// built-in kinds: the record is Kind/name, without the API group.
func detachedOwner(s *Scope) (ObjectRef, bool) {
	st := s.Q.Status
	if st.Target == nil || st.Target.Owner == "" || !slices.ContainsFunc(st.Actions, func(a securityv1alpha1.ActionStatus) bool {
		return a.Type == securityv1alpha1.ActionDetach && (a.State == securityv1alpha1.ActionApplied || len(a.RemovedLabels) > 0)
	}) {
		return ObjectRef{}, false
	}
	kind, _, _ := strings.Cut(st.Target.Owner, "/")
	apiVersion := map[string]string{"Deployment": "apps/v1", "StatefulSet": "apps/v1", "ReplicaSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}[kind]
	return parseResource(st.Target.Owner, apiVersion)
}

func isSuspendable(ref ObjectRef) bool {
	g := ref.GVK().Group
	return g == "batch" && (ref.Kind == "Job" || ref.Kind == "CronJob")
}

// scale scales the target's top controller to zero (suspends a Job or
// CronJob), recording holders and the original count on it.
type scale struct{}

func (scale) Traits() Traits { return Traits{Destructive: true, NeedsPersistedEvidence: true} }

func (scale) Plan(s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	if ref, refusal := scaleTarget(s, st); refusal == "" {
		st.Resource, st.ResourceAPIVersion = ref.String(), ref.APIVersion
	}
}

// Leftovers: none are cleaned; a workload keeps its record until released.
func (scale) Leftovers(context.Context, *Engine, Live) (int, error) { return 0, nil }

func (scale) Apply(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	ref, refusal := scaleTarget(s, st)
	if refusal != "" {
		st.State, st.Message = securityv1alpha1.ActionRefused, refusal
		return Outcome{}, nil
	}
	if ref.Kind == "DaemonSet" {
		st.State, st.Message = securityv1alpha1.ActionRefused, "a DaemonSet runs one pod per node and cannot be scaled to zero; use Isolate, Evict or CordonNode"
		return Outcome{}, nil
	}
	st.Resource, st.ResourceAPIVersion = ref.String(), ref.APIVersion
	// Read by Resolve moments ago in this pass; the patches below carry
	// its resourceVersion, so a change since then is a conflict, retried.
	w := s.Target.workloadObject(ref)
	if w == nil {
		w = &unstructured.Unstructured{}
		w.SetGroupVersionKind(ref.GVK())
		if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: s.Q.Namespace, Name: ref.Name}, w); err != nil {
			if apierrors.IsNotFound(err) {
				st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("owner %s not found", ref)
				return Outcome{}, nil
			}
			return Outcome{}, err
		}
	}
	var (
		o   Outcome
		err error
	)
	if isSuspendable(ref) {
		o, err = e.suspend(ctx, s, w, st)
	} else {
		o, err = e.scaleDown(ctx, s, w, st)
	}
	if err != nil || st.State != securityv1alpha1.ActionApplied {
		return o, err
	}
	notes, err := e.autoscalerWarning(ctx, s.Q.Namespace, ref)
	if gitops := gitOpsWarning(w); gitops != "" {
		notes = append(notes, gitops)
	}
	st.Message = strings.Join(notes, "; ")
	return o, err
}

// gitOpsWarning says when Argo CD or Flux manages the workload: a sync puts
// its replicas back, so Bulkhead reports it rather than fighting the sync.
func gitOpsWarning(w *unstructured.Unstructured) string {
	labels, ann := w.GetLabels(), w.GetAnnotations()
	var tool string
	switch {
	case ann["argocd.argoproj.io/tracking-id"] != "" || labels["argocd.argoproj.io/instance"] != "":
		tool = "Argo CD"
	case labels["kustomize.toolkit.fluxcd.io/name"] != "" || labels["helm.toolkit.fluxcd.io/name"] != "":
		tool = "Flux"
	case labels["app.kubernetes.io/instance"] != "":
		// Argo CD's default (label) tracking; Helm sets the same label, so
		// the warning says which label it saw rather than guessing.
		tool = fmt.Sprintf("Argo CD (label tracking: app.kubernetes.io/instance=%s)", labels["app.kubernetes.io/instance"])
	default:
		return ""
	}
	return fmt.Sprintf("warning: %s manages %s/%s and a sync may restore its replicas; suspend the sync or use Isolate (see docs/gitops.md)", tool, w.GetKind(), w.GetName())
}

// scaleDown records the holder and the original count on the workload, then
// sets /scale to zero: the record is written first, so a crash in between
// restores the right count.
func (e *Engine) scaleDown(ctx context.Context, s *Scope, w *unstructured.Unstructured, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	sc, cur, err := e.getScale(ctx, w)
	if err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
			st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("%s/%s does not serve the /scale subresource", w.GetKind(), w.GetName())
			return o, nil
		}
		return o, err
	}
	hs := holders(w.GetAnnotations())
	if !slices.Contains(hs, s.Holder()) {
		base := w.DeepCopy()
		ann := w.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		if len(hs) == 0 {
			ann[OriginalReplicasAnnotation] = strconv.Itoa(int(cur))
		}
		ann[HoldersAnnotation] = withHolder(hs, s.Holder())
		w.SetAnnotations(ann)
		if err := e.Client.Patch(ctx, w, lockedPatch(base), kubeutil.FieldOwner); err != nil {
			return o, err
		}
		o.Changed = true
	}
	orig, err := strconv.Atoi(w.GetAnnotations()[OriginalReplicasAnnotation])
	if err != nil {
		return o, fmt.Errorf("%s/%s: bad %s annotation: %w", w.GetKind(), w.GetName(), OriginalReplicasAnnotation, err)
	}
	r := int32(orig)
	st.OriginalReplicas = &r
	if cur != 0 {
		// The annotation patch moved the resourceVersion; zero is wanted
		// whatever the count is now.
		sc.SetResourceVersion("")
		if err := e.setScale(ctx, w, sc, 0); err != nil {
			return o, err
		}
		o.Changed = true
	}
	st.State = securityv1alpha1.ActionApplied
	return o, nil
}

// suspend sets spec.suspend on a Job or CronJob together with the holder and
// the original value, in one write.
func (e *Engine) suspend(ctx context.Context, s *Scope, w *unstructured.Unstructured, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	hs := holders(w.GetAnnotations())
	suspended, _, _ := unstructured.NestedBool(w.Object, "spec", "suspend")
	if slices.Contains(hs, s.Holder()) && suspended {
		st.State = securityv1alpha1.ActionApplied
		return Outcome{}, nil
	}
	base := w.DeepCopy()
	ann := w.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	if len(hs) == 0 {
		ann[OriginalSuspendAnnotation] = strconv.FormatBool(suspended)
	}
	ann[HoldersAnnotation] = withHolder(hs, s.Holder())
	w.SetAnnotations(ann)
	if err := unstructured.SetNestedField(w.Object, true, "spec", "suspend"); err != nil {
		return Outcome{}, err
	}
	if err := e.Client.Patch(ctx, w, lockedPatch(base), kubeutil.FieldOwner); err != nil {
		return Outcome{}, err
	}
	st.State = securityv1alpha1.ActionApplied
	return Outcome{Changed: true}, nil
}

// autoscalerWarning names HorizontalPodAutoscalers targeting the workload:
// they may scale it back up once it is released or if it is scaled by hand.
func (e *Engine) autoscalerWarning(ctx context.Context, ns string, ref ObjectRef) ([]string, error) {
	var notes []string
	hpas := &autoscalingv2.HorizontalPodAutoscalerList{}
	if err := e.Reader.List(ctx, hpas, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for _, h := range hpas.Items {
		t := h.Spec.ScaleTargetRef
		if t.Kind == ref.Kind && t.Name == ref.Name {
			notes = append(notes, fmt.Sprintf("warning: HorizontalPodAutoscaler %s targets %s and may scale it back up", h.Name, ref))
		}
	}
	return notes, nil
}

func (scale) Revert(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	ref, ok := parseResource(st.Resource, st.ResourceAPIVersion)
	if !ok {
		st.State, st.Message = securityv1alpha1.ActionReverted, "nothing was scaled"
		return o, nil
	}
	w := &unstructured.Unstructured{}
	w.SetGroupVersionKind(ref.GVK())
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: s.Q.Namespace, Name: ref.Name}, w); err != nil {
		if apierrors.IsNotFound(err) {
			st.State, st.Message = securityv1alpha1.ActionNotReverted, fmt.Sprintf("%s was deleted meanwhile", ref)
			return o, nil
		}
		return o, err
	}
	hs := holders(w.GetAnnotations())
	if !slices.Contains(hs, s.Holder()) {
		// Already released by an earlier pass; keep what it decided.
		if st.State != securityv1alpha1.ActionNotReverted {
			st.State = securityv1alpha1.ActionReverted
		}
		return o, nil
	}
	base := w.DeepCopy()
	ann := w.GetAnnotations()
	if rest := withoutHolder(hs, s.Holder()); rest != "" {
		ann[HoldersAnnotation] = rest
		w.SetAnnotations(ann)
		st.State, st.Message = securityv1alpha1.ActionReverted, "still held by "+rest+"; restored when the last holder releases"
		return Outcome{Changed: true}, e.Client.Patch(ctx, w, lockedPatch(base), kubeutil.FieldOwner)
	}
	if isSuspendable(ref) {
		if err := e.restoreSuspend(w, st); err != nil {
			return o, err
		}
	} else {
		restored, err := e.restoreReplicas(ctx, w, st)
		if err != nil {
			return o, err
		}
		if restored {
			// The scale write moved the resourceVersion.
			if err := e.Reader.Get(ctx, client.ObjectKeyFromObject(w), w); err != nil {
				return o, err
			}
			base, ann = w.DeepCopy(), w.GetAnnotations()
		}
	}
	delete(ann, HoldersAnnotation)
	delete(ann, OriginalReplicasAnnotation)
	delete(ann, OriginalSuspendAnnotation)
	w.SetAnnotations(ann)
	o.Changed = true
	return o, e.Client.Patch(ctx, w, lockedPatch(base), kubeutil.FieldOwner)
}

// restoreReplicas sets the original count unless someone changed it from
// zero meanwhile. A count already equal to the original means an earlier
// pass restored it and died before dropping the record.
func (e *Engine) restoreReplicas(ctx context.Context, w *unstructured.Unstructured, st *securityv1alpha1.ActionStatus) (bool, error) {
	orig, err := strconv.Atoi(w.GetAnnotations()[OriginalReplicasAnnotation])
	if err != nil {
		return false, fmt.Errorf("%s/%s: bad %s annotation: %w", w.GetKind(), w.GetName(), OriginalReplicasAnnotation, err)
	}
	sc, cur, err := e.getScale(ctx, w)
	if err != nil {
		return false, err
	}
	switch cur {
	case 0:
		if err := e.setScale(ctx, w, sc, int64(orig)); err != nil {
			return false, err
		}
		st.State, st.Message = securityv1alpha1.ActionReverted, fmt.Sprintf("restored %d replicas", orig)
		return true, nil
	case int64(orig):
		st.State, st.Message = securityv1alpha1.ActionReverted, fmt.Sprintf("restored %d replicas", orig)
	default:
		st.State, st.Message = securityv1alpha1.ActionNotReverted, fmt.Sprintf("replicas were changed to %d by someone else meanwhile; left as is (original %d)", cur, orig)
	}
	return false, nil
}

// restoreSuspend edits w in place; the caller writes it with the annotations.
func (e *Engine) restoreSuspend(w *unstructured.Unstructured, st *securityv1alpha1.ActionStatus) error {
	orig, _ := strconv.ParseBool(w.GetAnnotations()[OriginalSuspendAnnotation])
	suspended, _, _ := unstructured.NestedBool(w.Object, "spec", "suspend")
	if !suspended {
		st.State, st.Message = securityv1alpha1.ActionNotReverted, "resumed by someone else meanwhile; left as is"
		return nil
	}
	st.State, st.Message = securityv1alpha1.ActionReverted, fmt.Sprintf("restored suspend=%t", orig)
	return unstructured.SetNestedField(w.Object, orig, "spec", "suspend")
}

// getScale reads the /scale subresource of any kind that serves it.
func (e *Engine) getScale(ctx context.Context, w *unstructured.Unstructured) (*unstructured.Unstructured, int64, error) {
	sc := &unstructured.Unstructured{}
	sc.SetGroupVersionKind(schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"})
	if err := e.Client.SubResource("scale").Get(ctx, w, sc); err != nil {
		return nil, 0, err
	}
	n, _, err := unstructured.NestedInt64(sc.Object, "spec", "replicas")
	return sc, n, err
}

func (e *Engine) setScale(ctx context.Context, w, sc *unstructured.Unstructured, n int64) error {
	if err := unstructured.SetNestedField(sc.Object, n, "spec", "replicas"); err != nil {
		return err
	}
	return e.Client.SubResource("scale").Update(ctx, w, client.WithSubResourceBody(sc))
}
