package v1alpha1

// Names other tools and tests rely on (see PRODUCT.md "Names"). Changing any of
// them is a breaking change.
const (
	// QuarantineLabel marks a contained pod; its value is the Quarantine's name.
	QuarantineLabel = "security.bulkhead.dev/quarantine"
	// QuarantineTaintKey is the NoSchedule taint put on a cordoned node.
	QuarantineTaintKey = "security.bulkhead.dev/quarantine"
	// ManagedByLabel / ManagedByValue mark everything Bulkhead creates; Bulkhead
	// acts on and cleans up only objects that carry it.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "bulkhead"

	// ActorAnnotation names the human or component that made the last change.
	// The shipped ValidatingAdmissionPolicy requires it to equal the request's user.
	ActorAnnotation = "security.bulkhead.dev/actor"
	// ReconcileRequestAnnotation nudges a reconcile without editing spec.
	ReconcileRequestAnnotation = "security.bulkhead.dev/reconcile-requested-at"
	// PolicyLabel on a Quarantine names the first ThreatPolicy that created it.
	PolicyLabel = "security.bulkhead.dev/policy"
	// CreatedByPolicyAnnotation is set on Quarantines written by the policy
	// controller; the controller writes spec only on those.
	CreatedByPolicyAnnotation = "security.bulkhead.dev/created-by"
	// GitOps tools leave objects with these alone: set on every Quarantine
	// the policy controller creates (see docs/gitops.md).
	ArgoCompareOptionsAnnotation = "argocd.argoproj.io/compare-options"
	ArgoCompareOptionsValue      = "IgnoreExtraneous"
	FluxReconcileAnnotation      = "kustomize.toolkit.fluxcd.io/reconcile"
	FluxReconcileValue           = "disabled"

	// QuarantineFinalizer keeps a Quarantine until everything it did is undone.
	QuarantineFinalizer = "security.bulkhead.dev/release"

	// TargetNameField is the selectable field naming a Quarantine's target
	// (a field selector the API server evaluates).
	TargetNameField = "spec.target.name"

	// FieldManager is the server-side-apply field owner of everything Bulkhead writes.
	FieldManager = "bulkhead"

	// ControlConfigMap in the manager namespace holds cluster-wide switches that
	// are not kept in Git; key PausedKey = "true" makes every policy act as DryRun.
	ControlConfigMap = "bulkhead-control"
	PausedKey        = "paused"

	// DefaultManagerNamespace is where the manager runs and keeps baselines.
	DefaultManagerNamespace = "bulkhead-system"
)

// AlwaysProtectedNamespaces are never contained, whatever a policy says. The
// manager namespace is added at run time.
var AlwaysProtectedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Condition types and reasons shared by both kinds.
const (
	ConditionReady              = "Ready"
	ConditionReconciling        = "Reconciling"
	ConditionStalled            = "Stalled"
	ConditionContained          = "Contained"
	ConditionIsolationEffective = "IsolationEffective"
	// ConditionBehaviorCovered on a policy that weighs the behavior detector
	// says whether every node's sensor observes its pods (False names the
	// nodes without coverage: no sensor, silent, or no BPF).
	ConditionBehaviorCovered = "BehaviorCovered"

	ReasonBudgetExhausted          = "BudgetExhausted"
	ReasonProtectedNamespace       = "ProtectedNamespace"
	ReasonTargetAlreadyQuarantined = "TargetAlreadyQuarantined"
	ReasonTargetNotFound           = "TargetNotFound"
	ReasonAwaitingApproval         = "AwaitingApproval"
	ReasonNothingApplied           = "NothingApplied"
	ReasonReleased                 = "Released"
	ReasonSucceeded                = "Succeeded"
	ReasonProgressing              = "Progressing"
	ReasonInvalidSpec              = "InvalidSpec"
)
