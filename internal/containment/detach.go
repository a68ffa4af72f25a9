package containment

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// detach takes the pod out of its owner's selector: the owner starts a
// replacement while the pod stays (isolated) for forensics.
type detach struct{ podAction }

// Traits: the labels Detach removes are part of the evidence.
func (detach) Traits() Traits { return Traits{NeedsPersistedEvidence: true} }

func (detach) Apply(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	pod := podOf(s)
	if pod == nil {
		if st.State == "" || st.State == securityv1alpha1.ActionPending {
			st.State, st.Message = securityv1alpha1.ActionRefused, "the target pod is gone"
		}
		return Outcome{}, nil
	}
	st.Resource, st.ResourceAPIVersion = "Pod/"+pod.Name, "v1"
	if _, done := pod.Annotations[DetachedLabelsAnnotation]; done {
		st.State, st.RemovedLabels = securityv1alpha1.ActionApplied, keyList(pod.Annotations[DetachedLabelsAnnotation])
		return Outcome{}, nil
	}
	if len(s.Target.Chain) == 0 {
		st.State, st.Message = securityv1alpha1.ActionRefused, "the pod has no owner to detach from"
		return Outcome{}, nil
	}
	owner := s.Target.Chain[0]
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(owner.GVK())
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: owner.Name}, u); err != nil {
		if apierrors.IsNotFound(err) {
			st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("owner %s not found", owner)
			return Outcome{}, nil
		}
		return Outcome{}, err
	}
	match, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	var removed []string
	base := pod.DeepCopy()
	for k := range match {
		if v, ok := pod.Labels[k]; ok {
			removed = append(removed, k+"="+v)
			delete(pod.Labels, k)
		}
	}
	if len(removed) == 0 {
		st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("%s selects the pod by expressions only; nothing to relabel", owner)
		return Outcome{}, nil
	}
	slices.Sort(removed)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[DetachedLabelsAnnotation] = strings.Join(removed, ",")
	if err := e.Client.Patch(ctx, pod, client.MergeFrom(base), kubeutil.FieldOwner); err != nil {
		return Outcome{}, err
	}
	st.State, st.RemovedLabels, st.Message = securityv1alpha1.ActionApplied, removed, fmt.Sprintf("detached from %s", owner)
	return Outcome{Changed: true}, nil
}

// Revert deletes the forensic copy or keeps it, as the action says. The
// owner has replaced the pod, so its labels are never restored.
func (detach) Revert(ctx context.Context, e *Engine, s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	pod := podOf(s)
	if pod == nil {
		st.State = securityv1alpha1.ActionReverted
		return Outcome{}, nil
	}
	if a.Detach != nil && a.Detach.OnRelease == securityv1alpha1.DetachKeep {
		st.State, st.Message = securityv1alpha1.ActionNotReverted, "the detached pod is kept for forensics, as onRelease: Keep asks"
		return Outcome{}, nil
	}
	if _, ours := pod.Annotations[DetachedLabelsAnnotation]; !ours {
		st.State = securityv1alpha1.ActionReverted
		return Outcome{}, nil
	}
	if err := e.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); ignoreNotFound(err) != nil {
		return Outcome{}, err
	}
	st.State, st.Message = securityv1alpha1.ActionReverted, "deleted the detached pod"
	return Outcome{Changed: true}, nil
}
