package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IsApproved reports whether containment may proceed (absent means true).
func (q *Quarantine) IsApproved() bool { return q.Spec.Approved == nil || *q.Spec.Approved }

// IsReleased reports whether release was requested.
func (q *Quarantine) IsReleased() bool { return q.Spec.Released != nil && *q.Spec.Released }

// GetConditions and SetConditions let condition helpers work on both kinds.
func (q *Quarantine) GetConditions() []metav1.Condition { return q.Status.Conditions }

// SetConditions replaces the Quarantine's conditions.
func (q *Quarantine) SetConditions(c []metav1.Condition) { q.Status.Conditions = c }

// GetConditions returns the ThreatPolicy's conditions.
func (p *ThreatPolicy) GetConditions() []metav1.Condition { return p.Status.Conditions }

// SetConditions replaces the ThreatPolicy's conditions.
func (p *ThreatPolicy) SetConditions(c []metav1.Condition) { p.Status.Conditions = c }
