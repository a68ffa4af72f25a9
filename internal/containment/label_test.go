package containment

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestLabelOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionLabel, Label: &securityv1alpha1.LabelParams{
		Labels: map[string]string{"incident": "open", "app": "other"}, Annotations: map[string]string{"note": "x"},
	}}
	q := quarantineOf(podTarget, a)

	t.Run("apply, apply again without writes, revert", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		pod := &corev1.Pod{}
		f.get(pod, "shop-1", ns)
		if pod.Labels["incident"] != "open" || pod.Annotations["note"] != "x" || pod.Labels["app"] != "shop" || pod.Annotations[AddedLabelsAnnotation] != "incident" {
			t.Fatalf("pod %v %v", pod.Labels, pod.Annotations)
		}
		if st.Message == "" {
			t.Fatal("the skipped app key should be reported")
		}
		if o := f.revert(q, a, st); !o.Changed || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("revert: %+v %+v", o, st)
		}
		f.get(pod, "shop-1", ns)
		if _, ok := pod.Labels["incident"]; ok || pod.Labels["app"] != "shop" || pod.Annotations["note"] != "" || pod.Annotations[AddedLabelsAnnotation] != "" {
			t.Fatalf("after revert %v %v", pod.Labels, pod.Annotations)
		}
	})

	// Label's revert is driven by its marker, not by values: a key Bulkhead
	// added is removed even if someone changed its value since, and keys
	// it never added stay. It reports Reverted.
	t.Run("revert after someone changed the pod", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		pod := &corev1.Pod{}
		f.get(pod, "shop-1", ns)
		pod.Labels["incident"], pod.Labels["owner"] = "closed", "sre"
		f.update(pod)
		f.revert(q, a, st)
		f.get(pod, "shop-1", ns)
		if _, ok := pod.Labels["incident"]; ok || pod.Labels["owner"] != "sre" || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("state %s, labels %v", st.State, pod.Labels)
		}
	})
}
