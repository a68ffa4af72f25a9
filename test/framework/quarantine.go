package framework

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Quarantine is a Quarantine of pod in ns with actions, as a user writes one.
func Quarantine(ns, name, pod string, actions ...securityv1alpha1.Action) *securityv1alpha1.Quarantine {
	return &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
			Actions: actions,
		},
	}
}

// QuarantineFor returns the Quarantine in ns whose target is pod.
func QuarantineFor(ctx context.Context, c client.Reader, ns, pod string) (*securityv1alpha1.Quarantine, error) {
	var list securityv1alpha1.QuarantineList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Spec.Target.Name == pod {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no Quarantine for pod %s (%d in namespace)", pod, len(list.Items))
}

// ActionStates is "[Isolate=Applied ScaleToZero=Pending(message)]".
func ActionStates(q *securityv1alpha1.Quarantine) string {
	parts := make([]string, 0, len(q.Status.Actions))
	for _, a := range q.Status.Actions {
		p := string(a.Type) + "=" + string(a.State)
		if a.Message != "" {
			p += "(" + a.Message + ")"
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// QuarantineTainted reports whether the node carries Bulkhead's
// quarantine NoSchedule taint.
func QuarantineTainted(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == securityv1alpha1.QuarantineTaintKey && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}
