package containment

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestDetachOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionDetach}
	q := quarantineOf(podTarget, a)

	t.Run("apply, apply again without writes, revert deletes the copy", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		pod := &corev1.Pod{}
		f.get(pod, "shop-1", ns)
		if _, ok := pod.Labels["app"]; ok || pod.Annotations[DetachedLabelsAnnotation] != "app=shop,pod-template-hash=x" {
			t.Fatalf("pod %v %v", pod.Labels, pod.Annotations)
		}
		if o := f.revert(q, a, st); !o.Changed || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("revert: %+v %+v", o, st)
		}
		if f.get(pod, "shop-1", ns) {
			t.Fatal("detached pod not deleted")
		}
	})

	t.Run("onRelease Keep", func(t *testing.T) {
		keep := securityv1alpha1.Action{Type: securityv1alpha1.ActionDetach, Detach: &securityv1alpha1.DetachParams{OnRelease: securityv1alpha1.DetachKeep}}
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, keep)
		if f.revert(q, keep, st); st.State != securityv1alpha1.ActionNotReverted || !f.get(&corev1.Pod{}, "shop-1", ns) {
			t.Fatalf("state %s", st.State)
		}
	})

	// Someone put the pod back under its owner (dropped the marker): it is
	// no longer Bulkhead's copy and is not deleted.
	t.Run("revert after someone re-attached the pod", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		pod := &corev1.Pod{}
		f.get(pod, "shop-1", ns)
		delete(pod.Annotations, DetachedLabelsAnnotation)
		pod.Labels = map[string]string{"app": "shop", "pod-template-hash": "x"}
		f.update(pod)
		if o := f.revert(q, a, st); o.Changed || !f.get(pod, "shop-1", ns) || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("revert: %+v, state %s", o, st.State)
		}
	})
}
