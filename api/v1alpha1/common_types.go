package v1alpha1

// Score is a decimal string in [0,1] with at most four decimals, such as "0.8"
// or "0.95". The API carries no floats: parse it with k8s.io/apimachinery's
// resource.ParseQuantity or strconv where arithmetic is needed.
// +kubebuilder:validation:Pattern=`^(0(\.[0-9]{1,4})?|1(\.0{1,4})?)$`
// +kubebuilder:validation:MaxLength=6
type Score string

// ActionType names one containment action.
// +kubebuilder:validation:Enum=Isolate;Detach;ScaleToZero;CordonNode;Evict;Label
type ActionType string

const (
	ActionIsolate     ActionType = "Isolate"
	ActionDetach      ActionType = "Detach"
	ActionScaleToZero ActionType = "ScaleToZero"
	ActionCordonNode  ActionType = "CordonNode"
	ActionEvict       ActionType = "Evict"
	ActionLabel       ActionType = "Label"
)

// Action is one containment step. Parameter blocks are allowed only beside
// their own type.
// +kubebuilder:validation:XValidation:rule="!has(self.isolate) || self.type == 'Isolate'",message="isolate parameters are only allowed with type Isolate"
// +kubebuilder:validation:XValidation:rule="!has(self.detach) || self.type == 'Detach'",message="detach parameters are only allowed with type Detach"
// +kubebuilder:validation:XValidation:rule="!has(self.label) || self.type == 'Label'",message="label parameters are only allowed with type Label"
// +kubebuilder:validation:XValidation:rule="self.type != 'Label' || has(self.label)",message="type Label requires the label block with labels or annotations to add"
type Action struct {
	// type of the action.
	// +required
	Type ActionType `json:"type"`

	// isolate configures the Isolate action.
	// +optional
	Isolate *IsolateParams `json:"isolate,omitempty"`

	// detach configures the Detach action.
	// +optional
	Detach *DetachParams `json:"detach,omitempty"`

	// label configures the Label action.
	// +optional
	Label *LabelParams `json:"label,omitempty"`
}

// IsolateParams tune network isolation.
type IsolateParams struct {
	// allowDNS keeps egress to the cluster DNS pods on port 53 open, so the
	// workload does not crash-loop on name resolution while it is inspected.
	// +optional
	AllowDNS bool `json:"allowDNS,omitempty"`
}

// DetachOnRelease says what happens to a detached forensic copy on release.
// +kubebuilder:validation:Enum=Delete;Keep
type DetachOnRelease string

const (
	DetachDelete DetachOnRelease = "Delete"
	DetachKeep   DetachOnRelease = "Keep"
)

// DetachParams tune the Detach action.
type DetachParams struct {
	// onRelease deletes the detached pod (it is a forensic copy; the owner has
	// replaced it) or keeps it. Defaults to Delete.
	// +optional
	// +kubebuilder:default=Delete
	OnRelease DetachOnRelease `json:"onRelease,omitempty"`
}

// LabelParams are the labels and annotations the Label action adds to the pod.
// Bulkhead's own keys cannot be set this way.
// +kubebuilder:validation:XValidation:rule="has(self.labels) || has(self.annotations)",message="label needs at least one of labels or annotations"
type LabelParams struct {
	// labels to add to the pod.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('security.bulkhead.dev/') && k != 'app.kubernetes.io/managed-by')",message="labels may not use the security.bulkhead.dev/ prefix or app.kubernetes.io/managed-by"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 253 && size(self[k]) <= 63)",message="label keys must be at most 253 characters and values at most 63"
	Labels map[string]string `json:"labels,omitempty"`

	// annotations to add to the pod.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('security.bulkhead.dev/') && k != 'app.kubernetes.io/managed-by')",message="annotations may not use the security.bulkhead.dev/ prefix or app.kubernetes.io/managed-by"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 253 && size(self[k]) <= 4096)",message="annotation keys must be at most 253 characters and values at most 4096"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ActionState is where one action stands.
// +kubebuilder:validation:Enum=Pending;Applied;Refused;Failed;Reverted;NotReverted
type ActionState string

const (
	ActionPending     ActionState = "Pending"
	ActionApplied     ActionState = "Applied"
	ActionRefused     ActionState = "Refused"
	ActionFailed      ActionState = "Failed"
	ActionReverted    ActionState = "Reverted"
	ActionNotReverted ActionState = "NotReverted"
)

// ScoreComponent is one part of an explained score.
type ScoreComponent struct {
	// source is a detector name, or "misconfiguration" / "vulnerabilities" for exposure.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Source string `json:"source"`

	// score the source gave, in [0,1].
	// +optional
	Score Score `json:"score,omitempty"`

	// weight of a detector in the policy (1..100); absent for exposure.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight,omitempty"`

	// delta is how much this part moved the effective score, as a signed
	// decimal string such as "+0.05" or "-0.02" (exposure only).
	// +optional
	// +kubebuilder:validation:Pattern=`^[+-]?(0(\.[0-9]{1,4})?|1(\.0{1,4})?)$`
	// +kubebuilder:validation:MaxLength=7
	Delta string `json:"delta,omitempty"`

	// reason is the detector's or the exposure check's explanation.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`
}
