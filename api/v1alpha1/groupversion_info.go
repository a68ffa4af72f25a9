// Package v1alpha1 contains the security.bulkhead.dev/v1alpha1 API: ThreatPolicy
// (cluster-scoped, written by humans) and Quarantine (one per contained target).
// +kubebuilder:object:generate=true
// +groupName=security.bulkhead.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every object in this package.
	GroupVersion = schema.GroupVersion{Group: "security.bulkhead.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
