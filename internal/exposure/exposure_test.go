package exposure

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"
)

func pod(sc *corev1.SecurityContext, podSC *corev1.PodSecurityContext) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx-6d4cf56db6-abcde", Namespace: "default",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "nginx-6d4cf56db6", UID: "u", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{SecurityContext: podSC, Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.16", SecurityContext: sc}}},
	}
}

func TestMisconfiguration(t *testing.T) {
	a, err := NewAssessor(nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		delta  float64
		reason string
	}{
		{"privileged", pod(&corev1.SecurityContext{Privileged: ptr.To(true)}, nil), PrivilegedDelta, "privileged"},
		{"default is baseline only", pod(nil, nil), 0, "allowPrivilegeEscalation"},
		{"restricted", pod(restricted, nil), RestrictedDelta, "restricted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			adj := a.Misconfiguration(tc.pod)
			if adj.Delta != tc.delta || !strings.Contains(adj.Reason, tc.reason) {
				t.Errorf("got %+v, want delta %v and reason containing %q", adj, tc.delta, tc.reason)
			}
		})
	}
}

func TestVulnerabilitiesFromTrivyReport(t *testing.T) {
	raw, err := os.ReadFile("testdata/vulnerabilityreport-1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	report := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &report.Object); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(runtime.NewScheme()).WithObjects(report).Build()
	a, err := NewAssessor(c)
	if err != nil {
		t.Fatal(err)
	}
	adj, ok, err := a.Vulnerabilities(context.Background(), pod(nil, nil))
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if adj.Delta != CriticalDelta || !strings.Contains(adj.Reason, "2 critical") {
		t.Errorf("got %+v", adj)
	}
	other := pod(nil, nil)
	other.OwnerReferences[0].Name = "other"
	if _, ok, err := a.Vulnerabilities(context.Background(), other); ok || err != nil {
		t.Errorf("report for another owner counted: ok=%v err=%v", ok, err)
	}
	if _, ok, _ := (&Assessor{}).Vulnerabilities(context.Background(), other); ok {
		t.Error("no Trivy API, yet a finding")
	}
}

func TestWeigh(t *testing.T) {
	for _, tc := range []struct {
		c, h  int64
		delta float64
	}{{1, 0, CriticalDelta}, {0, 3, HighDelta}, {0, 0, CleanDelta}} {
		if got := Weigh(tc.c, tc.h).Delta; got != tc.delta {
			t.Errorf("Weigh(%d,%d) = %v, want %v", tc.c, tc.h, got, tc.delta)
		}
	}
}
