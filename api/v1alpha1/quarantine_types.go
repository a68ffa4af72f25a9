package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TargetKind is the kind of object a Quarantine contains.
// +kubebuilder:validation:Enum=Pod;Deployment;StatefulSet
type TargetKind string

const (
	TargetPod         TargetKind = "Pod"
	TargetDeployment  TargetKind = "Deployment"
	TargetStatefulSet TargetKind = "StatefulSet"
)

// QuarantineSpec says what to contain and how. Made by a policy or by hand.
// +kubebuilder:validation:XValidation:rule="self.target.kind == 'Pod' || !self.actions.exists(a, a.type == 'Detach' || a.type == 'Evict')",message="Detach and Evict act on one pod: they need target.kind Pod"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.safeguards) || has(self.safeguards)",message="spec.safeguards cannot be removed"
type QuarantineSpec struct {
	// target is the contained object, in the Quarantine's namespace. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.target is immutable: release this Quarantine and create a new one"
	Target Target `json:"target"`

	// actions to apply, each type at most once; applied in this order and
	// reverted in reverse order.
	// +required
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	// +kubebuilder:validation:XValidation:rule="oldSelf.all(a, self.exists(b, b.type == a.type))",message="spec.actions may only grow: an action cannot be removed; release the Quarantine to undo its actions"
	Actions []Action `json:"actions"`

	// approved is false while the Quarantine waits for a human; nothing is
	// applied until it is true. It never goes from true back to false.
	// +optional
	// +kubebuilder:default=true
	// +kubebuilder:validation:XValidation:rule="!oldSelf || self",message="approved cannot go from true back to false: release the Quarantine instead"
	Approved *bool `json:"approved,omitempty"`

	// released undoes everything the Quarantine did (GitOps-friendly; deleting
	// it does the same). It never goes from true back to false.
	// +optional
	// +kubebuilder:default=false
	// +kubebuilder:validation:XValidation:rule="!oldSelf || self",message="released cannot go from true back to false: create a new Quarantine instead"
	Released *bool `json:"released,omitempty"`

	// reason explains why the target is contained.
	// +optional
	Reason *QuarantineReason `json:"reason,omitempty"`

	// autoReleaseAfter, when set by a policy, is the shortest autoReleaseAfter
	// of its contributing policies.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	AutoReleaseAfter *metav1.Duration `json:"autoReleaseAfter,omitempty"`

	// approvalTimeout, when set, expires (releases) an unapproved Quarantine
	// after this long from creation.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	ApprovalTimeout *metav1.Duration `json:"approvalTimeout,omitempty"`

	// safeguards are limits containment keeps. A policy stamps its own at
	// creation (the strictest of its contributors, raised when another
	// joins); left empty, the manager's flags apply. The manager's flags
	// still apply where they are stricter.
	// +optional
	Safeguards *QuarantineSafeguards `json:"safeguards,omitempty"`

	// recommendations are escalations a human should consider (a higher
	// step reached outside Enforce mode), written by the contributing
	// policies; the controller reports them in status.recommendations.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Recommendations []Recommendation `json:"recommendations,omitempty"`
}

// QuarantineSafeguards are limits containment keeps.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.minSchedulableNodes) || has(self.minSchedulableNodes)",message="safeguards.minSchedulableNodes cannot be removed"
type QuarantineSafeguards struct {
	// minSchedulableNodes: CordonNode never leaves fewer schedulable nodes
	// than this (nor than the manager's --min-schedulable-nodes). It can
	// only rise.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="safeguards.minSchedulableNodes can only rise"
	MinSchedulableNodes *int32 `json:"minSchedulableNodes,omitempty"`
}

// Target names the contained object.
type Target struct {
	// kind of the target. Defaults to Pod.
	// +optional
	// +kubebuilder:default=Pod
	Kind TargetKind `json:"kind,omitempty"`

	// name of the target in the Quarantine's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
}

// QuarantineReason says why a target is contained.
type QuarantineReason struct {
	// policy is the first contributing ThreatPolicy (for the print column).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Policy string `json:"policy,omitempty"`

	// policies lists every contributing ThreatPolicy.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	Policies []string `json:"policies,omitempty"`

	// detector that contributed most.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Detector string `json:"detector,omitempty"`

	// score is the effective score that triggered containment.
	// +optional
	Score Score `json:"score,omitempty"`

	// summary is a human-readable explanation.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Summary string `json:"summary,omitempty"`
}

// QuarantinePhase is the lifecycle of a Quarantine.
// +kubebuilder:validation:Enum=Pending;Containing;Contained;Releasing;Released;Failed
type QuarantinePhase string

const (
	PhasePending    QuarantinePhase = "Pending"
	PhaseContaining QuarantinePhase = "Containing"
	PhaseContained  QuarantinePhase = "Contained"
	PhaseReleasing  QuarantinePhase = "Releasing"
	PhaseReleased   QuarantinePhase = "Released"
	PhaseFailed     QuarantinePhase = "Failed"
)

// QuarantineStatus is written by the controller only.
type QuarantineStatus struct {
	// phase of the Quarantine.
	// +optional
	Phase QuarantinePhase `json:"phase,omitempty"`

	// target as resolved at creation.
	// +optional
	Target *ResolvedTarget `json:"target,omitempty"`

	// actions records each action's state and what is needed to undo it.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=6
	Actions []ActionStatus `json:"actions,omitempty"`

	// evidence captured at creation, before any action.
	// +optional
	Evidence *Evidence `json:"evidence,omitempty"`

	// audit is the timeline: the first 10 and the last 40 entries.
	// +optional
	// +kubebuilder:validation:MaxItems=50
	Audit []AuditEntry `json:"audit,omitempty"`

	// auditDropped counts entries dropped between the first 10 and the last 40.
	// +optional
	AuditDropped int32 `json:"auditDropped,omitempty"`

	// recommendations are escalations a human should consider (a higher step
	// reached outside Enforce mode), as spec.recommendations lists them.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Recommendations []Recommendation `json:"recommendations,omitempty"`

	// containedAt is when the phase first became Contained.
	// +optional
	ContainedAt *metav1.Time `json:"containedAt,omitempty"`

	// releasedAt is when the phase became Released.
	// +optional
	ReleasedAt *metav1.Time `json:"releasedAt,omitempty"`

	// conditions: Ready, Contained, IsolationEffective.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ResolvedTarget is the target as found at creation.
type ResolvedTarget struct {
	// uid of the target at creation; a new object with the same name is not contained.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid,omitempty"`
	// node the pod ran on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
	// owner is the top controller as Kind/name, such as Deployment/shop.
	// +optional
	// +kubebuilder:validation:MaxLength=320
	Owner string `json:"owner,omitempty"`
	// pods contained, for a workload target.
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=253
	Pods []string `json:"pods,omitempty"`
}

// ActionStatus is one action's state and its undo record. The undo record is
// persisted before the change is made.
type ActionStatus struct {
	// type of the action.
	// +required
	Type ActionType `json:"type"`
	// state of the action.
	// +required
	State ActionState `json:"state"`
	// resource changed, as Kind/name (NetworkPolicy/bulkhead-x, Deployment/shop, Node/n1).
	// +optional
	// +kubebuilder:validation:MaxLength=320
	Resource string `json:"resource,omitempty"`
	// resourceAPIVersion of the changed resource, so release can find it
	// again after the pod is gone (apps/v1, argoproj.io/v1alpha1, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ResourceAPIVersion string `json:"resourceAPIVersion,omitempty"`
	// message explains a Refused, Failed or NotReverted state, or warns (HPA, GitOps).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// originalReplicas before ScaleToZero.
	// +optional
	OriginalReplicas *int32 `json:"originalReplicas,omitempty"`
	// nodeWasCordoned records whether the node was unschedulable before CordonNode.
	// +optional
	NodeWasCordoned *bool `json:"nodeWasCordoned,omitempty"`
	// addedLabels and addedAnnotations are the keys this action added (Label,
	// Isolate, Detach), so release removes exactly those.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=317
	AddedLabels []string `json:"addedLabels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=317
	AddedAnnotations []string `json:"addedAnnotations,omitempty"`
	// removedLabels holds labels Detach took off the pod, as key=value.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=317
	RemovedLabels []string `json:"removedLabels,omitempty"`
	// attempts counts tries (Evict blocked by a PodDisruptionBudget, retries).
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// appliedAt is when the action was applied.
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`
	// revertedAt is when the action was reverted.
	// +optional
	RevertedAt *metav1.Time `json:"revertedAt,omitempty"`
	// kernel is, for Isolate, what the node sensors report they enforce in
	// their nodes' kernels (independent of the CNI), one entry per pod.
	// +optional
	// +listType=map
	// +listMapKey=pod
	// +kubebuilder:validation:MaxItems=100
	Kernel []KernelEnforcement `json:"kernel,omitempty"`
}

// KernelEnforcement is a node sensor's isolation of one pod in its node's
// kernel: cgroup BPF programs that drop the pod's traffic, and its
// established connections destroyed.
type KernelEnforcement struct {
	// pod isolated.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod"`
	// node whose sensor enforces it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`
	// enforced is true while the pod's traffic is dropped in the kernel.
	// +required
	Enforced bool `json:"enforced"`
	// connectionsCut is true when the pod's established connections were destroyed.
	// +optional
	ConnectionsCut bool `json:"connectionsCut,omitempty"`
	// socketsDestroyed counts the connections destroyed.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SocketsDestroyed int32 `json:"socketsDestroyed,omitempty"`
	// method that cut connections: bpf_sock_destroy or sock_diag.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Method string `json:"method,omitempty"`
	// message says why enforcement or the cut did not happen.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// reportedAt is when the sensor last reported it.
	// +required
	ReportedAt metav1.Time `json:"reportedAt"`
}

// Evidence is what was captured before the first action. Secrets are redacted.
type Evidence struct {
	// capturedAt is when it was captured.
	// +required
	CapturedAt metav1.Time `json:"capturedAt"`
	// podSpec is the redacted pod spec, when it fits in status.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	PodSpec *runtime.RawExtension `json:"podSpec,omitempty"`
	// images of each container, with digests from the pod status.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Images []ContainerImage `json:"images,omitempty"`
	// node the pod ran on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
	// ownerChain from the pod up, as Kind/name.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=320
	OwnerChain []string `json:"ownerChain,omitempty"`
	// labels of the pod.
	// +optional
	// +kubebuilder:validation:MaxProperties=128
	Labels map[string]string `json:"labels,omitempty"`
	// scores at capture time, explained.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Scores []ScoreComponent `json:"scores,omitempty"`
	// secretRef names the Secret in the manager namespace holding the full
	// evidence (container statuses, Events, logs, every detector's score);
	// it is kept for the evidence retention after the Quarantine is gone.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	SecretRef string `json:"secretRef,omitempty"`
	// sha256 of the evidence document (in status or in the Secret).
	// +optional
	// +kubebuilder:validation:Pattern=`^[a-f0-9]{64}$`
	SHA256 string `json:"sha256,omitempty"`
	// sizeBytes of the full evidence document.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty"`
}

// ContainerImage is one container's image as it ran.
type ContainerImage struct {
	// container name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Container string `json:"container"`
	// image as written in the spec.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`
	// imageID with digest, from the pod status.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	ImageID string `json:"imageID,omitempty"`
}

// AuditEntry is one step in the timeline.
type AuditEntry struct {
	// time of the entry.
	// +required
	Time metav1.Time `json:"time"`
	// actor is who caused it: a user, or bulkhead/<component>.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Actor string `json:"actor"`
	// event is a short CamelCase name (Created, Applied, Reverted, Tampered...).
	// +required
	// +kubebuilder:validation:MaxLength=63
	Event string `json:"event"`
	// message says what happened.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// Recommendation is an escalation not applied automatically.
type Recommendation struct {
	// time it was recommended.
	// +required
	Time metav1.Time `json:"time"`
	// policy that recommends it.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Policy string `json:"policy"`
	// score reached.
	// +required
	Score Score `json:"score"`
	// actions recommended.
	// +required
	// +kubebuilder:validation:MaxItems=6
	Actions []ActionType `json:"actions"`
}

// Quarantine contains one target: it applies actions, records every step and
// undoes exactly what it did on release.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=qt,categories=bulkhead
// +kubebuilder:selectablefield:JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Score",type=string,JSONPath=`.spec.reason.score`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.reason.policy`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters"
type Quarantine struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired containment.
	// +required
	Spec QuarantineSpec `json:"spec"`

	// status is observed state.
	// +optional
	Status QuarantineStatus `json:"status,omitempty"`
}

// QuarantineList is a list of Quarantine.
// +kubebuilder:object:root=true
type QuarantineList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Quarantine `json:"items"`
}
