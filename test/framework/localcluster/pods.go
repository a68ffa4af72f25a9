package localcluster

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RunningPods returns the pods in ns matching labels, sorted by name, when
// exactly n of them are Running (on node, if node is set) and none is in
// another phase; otherwise an error saying what is not there yet. Pods being
// deleted are ignored. Callers poll it with their own progress output.
func RunningPods(ctx context.Context, c client.Reader, ns string, labels map[string]string, n int32, node string) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Status.Phase != corev1.PodRunning {
			return nil, fmt.Errorf("pod %s is %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		}
		if node != "" && p.Spec.NodeName != node {
			return nil, fmt.Errorf("pod %s is on %s", p.Name, p.Spec.NodeName)
		}
		pods = append(pods, p)
	}
	if int32(len(pods)) != n {
		return nil, fmt.Errorf("%d of %d pods Running", len(pods), n)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, nil
}
