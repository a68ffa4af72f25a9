package kubeutil

import (
	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// TargetKind is a Quarantine target's kind; an empty kind means Pod.
func TargetKind(t securityv1alpha1.Target) securityv1alpha1.TargetKind {
	if t.Kind == "" {
		return securityv1alpha1.TargetPod
	}
	return t.Kind
}

// IsPodTarget reports whether a target is a single pod.
func IsPodTarget(t securityv1alpha1.Target) bool {
	return TargetKind(t) == securityv1alpha1.TargetPod
}
