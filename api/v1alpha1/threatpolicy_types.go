package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PolicyMode says what a policy does when a pod crosses its threshold.
// +kubebuilder:validation:Enum=Enforce;DryRun;RequireApproval
type PolicyMode string

const (
	ModeEnforce         PolicyMode = "Enforce"
	ModeDryRun          PolicyMode = "DryRun"
	ModeRequireApproval PolicyMode = "RequireApproval"
)

// ThreatPolicySpec is written by humans and kept in Git; the controller never
// writes it.
// +kubebuilder:validation:XValidation:rule="double(self.response[0].minScore) >= double(self.scoring.threshold)",message="response[0].minScore must be at least scoring.threshold: nothing acts below the threshold"
type ThreatPolicySpec struct {
	// mode is Enforce (create Quarantines), DryRun (record plans only) or
	// RequireApproval (create Quarantines that wait for a human).
	// +required
	Mode PolicyMode `json:"mode"`

	// selector chooses the pods this policy covers.
	// +required
	Selector PodSelection `json:"selector"`

	// detectors are the score sources that count, and how much.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Detectors []DetectorWeight `json:"detectors"`

	// scoring sets the threshold, how long it must hold and exposure weighting.
	// +required
	Scoring Scoring `json:"scoring"`

	// response is the escalation ladder: steps in strictly increasing minScore.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	// +kubebuilder:validation:XValidation:rule="size(self) < 2 || double(self[0].minScore) < double(self[1].minScore)",message="response steps must be in strictly increasing minScore: response[1].minScore must be greater than response[0].minScore"
	// +kubebuilder:validation:XValidation:rule="size(self) < 3 || double(self[1].minScore) < double(self[2].minScore)",message="response steps must be in strictly increasing minScore: response[2].minScore must be greater than response[1].minScore"
	// +kubebuilder:validation:XValidation:rule="size(self) < 4 || double(self[2].minScore) < double(self[3].minScore)",message="response steps must be in strictly increasing minScore: response[3].minScore must be greater than response[2].minScore"
	// +kubebuilder:validation:XValidation:rule="size(self) < 5 || double(self[3].minScore) < double(self[4].minScore)",message="response steps must be in strictly increasing minScore: response[4].minScore must be greater than response[3].minScore"
	Response []ResponseStep `json:"response"`

	// safeguards bound what this policy may do.
	// +optional
	Safeguards Safeguards `json:"safeguards,omitempty"`

	// release configures automatic release and approval expiry.
	// +optional
	Release ReleasePolicy `json:"release,omitempty"`
}

// PodSelection selects pods by their namespace's labels and their own.
// +kubebuilder:validation:XValidation:rule="has(self.namespaceSelector) || has(self.podSelector)",message="selector needs namespaceSelector, podSelector or both (use {} to select everything explicitly)"
type PodSelection struct {
	// namespaceSelector selects namespaces by label; absent matches all.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector selects pods by label; absent matches all.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// DetectorWeight makes a detector's score count for this policy.
type DetectorWeight struct {
	// name of the detector: behavior, falco, tetragon, alertmanager or the
	// name an external model posts under.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// weight of this detector in the weighted mean, 1..100.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight"`
}

// Scoring says when a pod counts as a threat.
type Scoring struct {
	// threshold of the effective score, a decimal string in [0,1].
	// +required
	Threshold Score `json:"threshold"`

	// sustain is how many consecutive evaluations must be at or above the
	// threshold before acting. Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Sustain int32 `json:"sustain,omitempty"`

	// sustainFor is how long the score must have stayed at or above the
	// threshold (since the first evaluation that reached it) before acting,
	// as a Go duration such as "30s"; sustain evaluations are still needed
	// too. A burst of signals cannot stand in for time. Absent: count only.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="sustainFor must be at most 1h"
	SustainFor *metav1.Duration `json:"sustainFor,omitempty"`

	// minFreshWeight is the percentage of this policy's detector weight
	// that detectors with a fresh score must carry before a destructive
	// action (ScaleToZero, CordonNode, Evict, Detach) is taken; two fresh
	// detectors also suffice. Lower steps are not affected. Defaults to 50.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MinFreshWeight *int32 `json:"minFreshWeight,omitempty"`

	// exposure lets misconfiguration and known vulnerabilities move the score
	// by at most ±0.10; exposure never lifts a zero score.
	// +optional
	Exposure Exposure `json:"exposure,omitempty"`
}

// Exposure selects which exposure signals weigh the score.
type Exposure struct {
	// misconfiguration weighs the Pod Security Standards evaluation of the pod.
	// +optional
	Misconfiguration bool `json:"misconfiguration,omitempty"`

	// vulnerabilities weighs Trivy Operator VulnerabilityReports, when served.
	// +optional
	Vulnerabilities bool `json:"vulnerabilities,omitempty"`
}

// ResponseStep is one rung of the escalation ladder.
type ResponseStep struct {
	// minScore is the effective score from which this step applies.
	// +required
	MinScore Score `json:"minScore"`

	// actions to take at this step, each type at most once.
	// +required
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Actions []Action `json:"actions"`
}

// Safeguards bound the blast radius of a policy.
type Safeguards struct {
	// protectedNamespaces are never contained by this policy, in addition to
	// kube-system, kube-public, kube-node-lease and the manager namespace.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ProtectedNamespaces []string `json:"protectedNamespaces,omitempty"`

	// maxActiveQuarantines is this policy's budget of unreleased Quarantines.
	// Defaults to 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxActiveQuarantines int32 `json:"maxActiveQuarantines,omitempty"`

	// namespaceShare is the percentage of maxActiveQuarantines that the pods
	// of one namespace may hold (rounded up, at least 1), so one namespace
	// flooding decoys cannot spend the whole budget. Defaults to 50.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	NamespaceShare *int32 `json:"namespaceShare,omitempty"`

	// maxCordonedNodes caps how many of this policy's unreleased Quarantines
	// may carry CordonNode; beyond it CordonNode is left out (and said so)
	// while the other actions still apply. 0 never cordons. Defaults to 2.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	MaxCordonedNodes *int32 `json:"maxCordonedNodes,omitempty"`

	// minSchedulableNodes: CordonNode never leaves fewer schedulable nodes.
	// Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	MinSchedulableNodes *int32 `json:"minSchedulableNodes,omitempty"`

	// cooldown per target after a release, during which it is not contained
	// again by this policy, as a Go duration such as "10m".
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`
}

// ReleasePolicy configures automatic release.
// +kubebuilder:validation:XValidation:rule="!has(self.releaseWithoutEvidenceAfter) || (has(self.autoReleaseAfter) && duration(self.releaseWithoutEvidenceAfter) >= duration(self.autoReleaseAfter))",message="release.releaseWithoutEvidenceAfter needs autoReleaseAfter and must not be shorter than it"
type ReleasePolicy struct {
	// autoReleaseAfter releases a Quarantine after this long, but only if the
	// score has fallen below the threshold; otherwise it is extended and a
	// notification sent. Absent means manual release only.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	AutoReleaseAfter *metav1.Duration `json:"autoReleaseAfter,omitempty"`

	// releaseWithoutEvidenceAfter is the fallback when nothing says the
	// score fell: the detectors that triggered sent no fresh score (after a
	// manager failover, or a detector that reports only incidents), or the
	// pod is gone (ScaleToZero, Evict) and no pod of its workload is
	// scored. Once this long has passed since creation, such a Quarantine is
	// released all the same (audited as ReleasedWithoutEvidence). Absent,
	// it is held and extended until a human releases it.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	ReleaseWithoutEvidenceAfter *metav1.Duration `json:"releaseWithoutEvidenceAfter,omitempty"`

	// approvalTimeout expires a Quarantine that nobody approved in time.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	ApprovalTimeout *metav1.Duration `json:"approvalTimeout,omitempty"`
}

// ThreatPolicyStatus is written by the controller only.
type ThreatPolicyStatus struct {
	// observedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (kstatus), Reconciling, Stalled and BudgetExhausted as a
	// Ready=False reason.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// podsCovered is how many pods the selector matches now.
	// +optional
	PodsCovered int32 `json:"podsCovered,omitempty"`

	// activeQuarantines counts unreleased Quarantines this policy contributes to.
	// +optional
	ActiveQuarantines int32 `json:"activeQuarantines,omitempty"`

	// lastTrigger is the most recent time this policy's threshold was crossed.
	// +optional
	LastTrigger *Trigger `json:"lastTrigger,omitempty"`

	// detectors holds the last signal time per detector this policy uses.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Detectors []DetectorStatus `json:"detectors,omitempty"`

	// plans are what DryRun (or a paused cluster) would have done, newest last.
	// +optional
	// +kubebuilder:validation:MaxItems=50
	Plans []Plan `json:"plans,omitempty"`
}

// Trigger records one threshold crossing.
type Trigger struct {
	// time of the crossing.
	// +required
	Time metav1.Time `json:"time"`
	// namespace of the pod.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// pod that crossed.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod"`
	// score reached.
	// +required
	Score Score `json:"score"`
	// quarantine created or extended, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Quarantine string `json:"quarantine,omitempty"`
}

// DetectorStatus is what the policy last heard from one detector.
type DetectorStatus struct {
	// name of the detector.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// lastSignalTime is when a signal from it last reached a covered pod.
	// +optional
	LastSignalTime *metav1.Time `json:"lastSignalTime,omitempty"`
}

// Plan is a containment that was not carried out (DryRun, pause or a safeguard).
type Plan struct {
	// time the plan was made.
	// +required
	Time metav1.Time `json:"time"`
	// namespace of the pod.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// pod that would be contained.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod"`
	// score is the effective score.
	// +required
	Score Score `json:"score"`
	// breakdown explains the score.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Breakdown []ScoreComponent `json:"breakdown,omitempty"`
	// actions that would be taken.
	// +optional
	// +kubebuilder:validation:MaxItems=6
	Actions []ActionType `json:"actions,omitempty"`
	// blockedBy names the safeguard that would block it, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	BlockedBy string `json:"blockedBy,omitempty"`
}

// ThreatPolicy selects pods, weighs detector scores and exposure, and defines
// the escalation ladder that creates Quarantines.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tp,categories=bulkhead
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.activeQuarantines`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ThreatPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired behaviour.
	// +required
	Spec ThreatPolicySpec `json:"spec"`

	// status is observed state.
	// +optional
	Status ThreatPolicyStatus `json:"status,omitempty"`
}

// ThreatPolicyList is a list of ThreatPolicy.
// +kubebuilder:object:root=true
type ThreatPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ThreatPolicy `json:"items"`
}
