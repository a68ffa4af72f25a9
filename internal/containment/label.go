package containment

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// keyList parses a comma-separated marker annotation.
func keyList(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// addKeys sets each wanted key that is absent and returns the marker list:
// keys already there with a value Bulkhead did not set are left alone and
// never removed later.
func addKeys(have, want map[string]string, marked []string) (map[string]string, []string, []string) {
	if have == nil {
		have = map[string]string{}
	}
	var skipped []string
	for k, v := range want {
		cur, ok := have[k]
		switch {
		case !ok:
			have[k] = v
			if !slices.Contains(marked, k) {
				marked = append(marked, k)
			}
		case cur != v && !slices.Contains(marked, k):
			skipped = append(skipped, k)
		}
	}
	slices.Sort(marked)
	slices.Sort(skipped)
	return have, marked, skipped
}

// label adds labels and annotations to the target's pods, marking which
// keys it added so release removes only those.
type label struct{ podAction }

// Traits: the labels it adds would otherwise enter the evidence.
func (label) Traits() Traits { return Traits{NeedsPersistedEvidence: true} }

func (label) Apply(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	if a.Label == nil {
		st.State, st.Message = securityv1alpha1.ActionRefused, "the label block is missing"
		return o, nil
	}
	if s.Target == nil {
		if st.State == "" || st.State == securityv1alpha1.ActionPending {
			st.State, st.Message = securityv1alpha1.ActionRefused, "the target is gone"
		}
		return o, nil
	}
	var skipped []string
	for i := range s.Target.Pods {
		p := &s.Target.Pods[i]
		base := p.DeepCopy()
		var markedL, markedA, skipL, skipA []string
		p.Labels, markedL, skipL = addKeys(p.Labels, a.Label.Labels, keyList(p.Annotations[AddedLabelsAnnotation]))
		p.Annotations, markedA, skipA = addKeys(p.Annotations, a.Label.Annotations, keyList(p.Annotations[AddedAnnotationsAnnotation]))
		if len(markedL) > 0 {
			p.Annotations[AddedLabelsAnnotation] = strings.Join(markedL, ",")
		}
		if len(markedA) > 0 {
			p.Annotations[AddedAnnotationsAnnotation] = strings.Join(markedA, ",")
		}
		skipped = append(skipped, skipL...)
		skipped = append(skipped, skipA...)
		st.AddedLabels, st.AddedAnnotations = markedL, markedA
		if labelsEqual(base.Labels, p.Labels) && labelsEqual(base.Annotations, p.Annotations) {
			continue
		}
		// Keys and their marker go in one write.
		if err := ignoreNotFound(e.Client.Patch(ctx, p, client.MergeFrom(base), kubeutil.FieldOwner)); err != nil {
			return o, err
		}
		o.Changed = true
	}
	st.State, st.Message = securityv1alpha1.ActionApplied, ""
	if len(skipped) > 0 {
		st.Message = fmt.Sprintf("left existing keys with other values alone: %s", strings.Join(slices.Compact(skipped), ", "))
	}
	return o, nil
}

func (label) Revert(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	var o Outcome
	st.State, st.Message = securityv1alpha1.ActionReverted, ""
	if s.Target == nil {
		return o, nil
	}
	for i := range s.Target.Pods {
		p := &s.Target.Pods[i]
		markedL, markedA := keyList(p.Annotations[AddedLabelsAnnotation]), keyList(p.Annotations[AddedAnnotationsAnnotation])
		if len(markedL)+len(markedA) == 0 {
			continue
		}
		base := p.DeepCopy()
		for _, k := range markedL {
			delete(p.Labels, k)
		}
		for _, k := range markedA {
			delete(p.Annotations, k)
		}
		delete(p.Annotations, AddedLabelsAnnotation)
		delete(p.Annotations, AddedAnnotationsAnnotation)
		if err := ignoreNotFound(e.Client.Patch(ctx, p, client.MergeFrom(base), kubeutil.FieldOwner)); err != nil {
			return o, err
		}
		o.Changed = true
	}
	return o, nil
}

func labelsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// podOf is the single pod of a Pod target.
func podOf(s *Scope) *corev1.Pod {
	if s.Target == nil || len(s.Target.Pods) != 1 || !kubeutil.IsPodTarget(s.Q.Spec.Target) {
		return nil
	}
	return &s.Target.Pods[0]
}
