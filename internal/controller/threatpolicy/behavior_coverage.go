package threatpolicy

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// SensorSilence is how long a node's sensor may be quiet before its node
// counts as uncovered: several missed 30 s heartbeats.
const SensorSilence = 2 * time.Minute

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// reconcileBehaviorCoverage sets BehaviorCovered on a policy that weighs
// the behavior detector: a node whose sensor never reported, went silent or
// cannot use BPF leaves that policy blind there, and the status says so.
func (r *ThreatPolicyReconciler) reconcileBehaviorCoverage(ctx context.Context, p *securityv1alpha1.ThreatPolicy, st *securityv1alpha1.ThreatPolicyStatus, _ Snapshot) error {
	weighs := false
	for _, d := range p.Spec.Detectors {
		weighs = weighs || d.Name == detector.Behavior
	}
	if !weighs || r.Coverage == nil {
		apimeta.RemoveStatusCondition(&st.Conditions, securityv1alpha1.ConditionBehaviorCovered)
		return nil
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return err
	}
	names := make([]string, len(nodes.Items))
	for i, n := range nodes.Items {
		names[i] = n.Name
	}
	c := BehaviorCoverage(names, r.Coverage.Nodes(), r.Coverage.Uncovered(SensorSilence))
	metrics.NodesWithoutBehaviorCoverage.Set(float64(c.uncovered))
	setCondition(st, p, securityv1alpha1.ConditionBehaviorCovered, c.status, c.reason, c.message)
	return nil
}

type coverage struct {
	status          metav1.ConditionStatus
	reason, message string
	uncovered       int
}

// BehaviorCoverage decides the condition from the cluster's nodes and what
// their sensors last said (pure, for tests).
func BehaviorCoverage(nodes []string, reported, uncovered []sensorhub.NodeState) coverage {
	seen := map[string]bool{}
	for _, s := range reported {
		seen[s.Node] = true
	}
	why := map[string]string{}
	for _, s := range uncovered {
		if !s.Ready {
			why[s.Node] = "no BPF: " + s.Missing
		} else {
			why[s.Node] = "sensor silent since " + s.LastSeen.UTC().Format(time.RFC3339)
		}
	}
	var list []string
	for _, n := range nodes {
		switch {
		case !seen[n]:
			list = append(list, n+" (no sensor)")
		case why[n] != "":
			list = append(list, n+" ("+why[n]+")")
		}
	}
	if len(list) == 0 {
		return coverage{status: metav1.ConditionTrue, reason: "AllNodesCovered", message: "every node's sensor observes its pods"}
	}
	msg := "behavior scores are missing on: "
	for i, s := range list {
		if i == 10 {
			msg += "…"
			break
		}
		if i > 0 {
			msg += ", "
		}
		msg += s
	}
	return coverage{status: metav1.ConditionFalse, reason: "NodesUncovered", message: msg, uncovered: len(list)}
}
