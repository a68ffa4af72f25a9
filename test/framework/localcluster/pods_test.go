package localcluster

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func shopPod(name, node string, phase corev1.PodPhase) client.Object {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "shop"}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestRunningPods(t *testing.T) {
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop", Labels: map[string]string{"app": "db"}}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	cases := []struct {
		name    string
		pods    []client.Object
		n       int32
		node    string
		want    []string
		wantErr string
	}{
		{"exactly n, sorted, other apps ignored", []client.Object{shopPod("b", "n1", corev1.PodRunning), shopPod("a", "n2", corev1.PodRunning), other}, 2, "", []string{"a", "b"}, ""},
		{"one still pending", []client.Object{shopPod("a", "n1", corev1.PodRunning), shopPod("b", "", corev1.PodPending)}, 2, "", nil, "pod b is Pending"},
		{"too few", []client.Object{shopPod("a", "n1", corev1.PodRunning)}, 2, "", nil, "1 of 2 pods Running"},
		{"on the wrong node", []client.Object{shopPod("a", "n1", corev1.PodRunning), shopPod("b", "n2", corev1.PodRunning)}, 2, "n1", nil, "pod b is on n2"},
		{"on the asked node", []client.Object{shopPod("a", "n1", corev1.PodRunning)}, 1, "n1", []string{"a"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(tc.pods...).Build()
			pods, err := RunningPods(context.Background(), c, "shop", map[string]string{"app": "shop"}, tc.n, tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range pods {
				names = append(names, p.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", names, tc.want)
			}
		})
	}
}
