package containment

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Plan records, before any write, which resource an action will change, so
// release finds it even if the manager dies right after the change and the
// target disappears. It writes nothing.
func Plan(s *Scope, a securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	st.Type, st.State = a.Type, securityv1alpha1.ActionPending
	switch a.Type {
	case securityv1alpha1.ActionIsolate:
		st.Resource, st.ResourceAPIVersion = "NetworkPolicy/"+NetworkPolicyName(s.Q.Name), "networking.k8s.io/v1"
	case securityv1alpha1.ActionScaleToZero:
		if ref, refusal := scaleTarget(s, st); refusal == "" {
			st.Resource, st.ResourceAPIVersion = ref.String(), ref.APIVersion
		}
	case securityv1alpha1.ActionCordonNode:
		if s.Target != nil && s.Target.Node != "" {
			st.Resource, st.ResourceAPIVersion = "Node/"+s.Target.Node, "v1"
		}
	default:
		if s.Target != nil {
			st.Resource, st.ResourceAPIVersion = "Pod/"+s.Q.Spec.Target.Name, "v1"
		}
	}
}

// Permanent reports errors retrying cannot fix: the action is Failed.
func Permanent(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}
