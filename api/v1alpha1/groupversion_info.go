// Package v1alpha1 contains the security.bulkhead.dev/v1alpha1 API: ThreatPolicy
// (cluster-scoped, written by humans) and Quarantine (one per contained target).
// +kubebuilder:object:generate=true
// +groupName=security.bulkhead.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every object in this package.
	GroupVersion = schema.GroupVersion{Group: "security.bulkhead.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme;
	// it uses apimachinery only, so importing the API stays cheap.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ThreatPolicy{}, &ThreatPolicyList{}, &Quarantine{}, &QuarantineList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
