// Package exposure weighs a pod's misconfiguration (a Pod Security Standards
// evaluation) and known vulnerabilities (Trivy Operator VulnerabilityReports)
// into score adjustments for scoring.Fuse.
package exposure

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// How far each finding moves a score (the sum is capped by scoring).
const (
	// PrivilegedDelta: the pod fails the baseline standard.
	PrivilegedDelta = 0.05
	// RestrictedDelta: the pod meets the restricted standard.
	RestrictedDelta = -0.05
	// CriticalDelta / HighDelta: its image has critical / high vulnerabilities.
	CriticalDelta = 0.05
	HighDelta     = 0.03
	// CleanDelta: a report exists and lists nothing high or critical.
	CleanDelta = -0.02
)

// VulnerabilityReportGVK is Trivy Operator's report kind.
var VulnerabilityReportGVK = schema.GroupVersionKind{Group: "aquasecurity.github.io", Version: "v1alpha1", Kind: "VulnerabilityReport"}

// Trivy Operator labels a report with the workload it scanned.
const (
	labelResourceKind = "trivy-operator.resource.kind"
	labelResourceName = "trivy-operator.resource.name"
)

// Assessor evaluates exposure.
type Assessor struct {
	evaluator psapolicy.Evaluator
	// Reports reads VulnerabilityReports: a LazyReports over the manager's
	// cache, so a watch starts only when the API is served and first read.
	// Nil, or a NoKindMatch error from it, means Trivy Operator is absent.
	Reports client.Reader
}

// NewAssessor builds the Pod Security Standards evaluator.
func NewAssessor(reports client.Reader) (*Assessor, error) {
	ev, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("pod security evaluator: %w", err)
	}
	return &Assessor{evaluator: ev, Reports: reports}, nil
}

// Misconfiguration evaluates the pod against the baseline and restricted
// Pod Security Standards.
func (a *Assessor) Misconfiguration(pod *corev1.Pod) scoring.Adjustment {
	adj := scoring.Adjustment{Source: scoring.SourceMisconfiguration}
	latest := psaapi.LatestVersion()
	baseline := psapolicy.AggregateCheckResults(a.evaluator.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelBaseline, Version: latest}, &pod.ObjectMeta, &pod.Spec))
	if !baseline.Allowed {
		adj.Delta = PrivilegedDelta
		adj.Reason = "violates baseline Pod Security Standard: " + baseline.ForbiddenDetail()
		return adj
	}
	restricted := psapolicy.AggregateCheckResults(a.evaluator.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: latest}, &pod.ObjectMeta, &pod.Spec))
	if restricted.Allowed {
		adj.Delta = RestrictedDelta
		adj.Reason = "meets the restricted Pod Security Standard"
		return adj
	}
	adj.Reason = "meets baseline but not restricted: " + restricted.ForbiddenReason()
	return adj
}

// Vulnerabilities weighs the reports Trivy Operator wrote for the pod's
// owner (or the pod itself). ok is false when there is nothing to weigh.
func (a *Assessor) Vulnerabilities(ctx context.Context, pod *corev1.Pod) (scoring.Adjustment, bool, error) {
	if a.Reports == nil {
		return scoring.Adjustment{}, false, nil
	}
	kind, name := "Pod", pod.Name
	if ref := metav1.GetControllerOf(pod); ref != nil {
		kind, name = ref.Kind, ref.Name
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(VulnerabilityReportGVK.GroupVersion().WithKind(VulnerabilityReportGVK.Kind + "List"))
	if err := a.Reports.List(ctx, list, client.InNamespace(pod.Namespace),
		client.MatchingLabels{labelResourceKind: kind, labelResourceName: name}); err != nil {
		if apimeta.IsNoMatchError(err) {
			// Trivy Operator is not installed.
			return scoring.Adjustment{}, false, nil
		}
		return scoring.Adjustment{}, false, fmt.Errorf("listing vulnerability reports: %w", err)
	}
	if len(list.Items) == 0 {
		return scoring.Adjustment{}, false, nil
	}
	var critical, high int64
	for _, r := range list.Items {
		c, h := Counts(r.Object)
		critical += c
		high += h
	}
	return Weigh(critical, high), true, nil
}

// Counts reads a report's critical and high counts from its summary.
func Counts(report map[string]any) (critical, high int64) {
	critical, _, _ = unstructured.NestedInt64(report, "report", "summary", "criticalCount")
	high, _, _ = unstructured.NestedInt64(report, "report", "summary", "highCount")
	return critical, high
}

// Weigh turns vulnerability counts into an adjustment.
func Weigh(critical, high int64) scoring.Adjustment {
	adj := scoring.Adjustment{Source: scoring.SourceVulnerabilities}
	switch {
	case critical > 0:
		adj.Delta = CriticalDelta
		adj.Reason = fmt.Sprintf("%d critical and %d high vulnerabilities", critical, high)
	case high > 0:
		adj.Delta = HighDelta
		adj.Reason = fmt.Sprintf("%d high vulnerabilities", high)
	default:
		adj.Delta = CleanDelta
		adj.Reason = "no high or critical vulnerabilities reported"
	}
	return adj
}
