package containment

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestIsolateOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}
	q := quarantineOf(podTarget, a)

	t.Run("apply, apply again without writes, revert", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		np, pod := &networkingv1.NetworkPolicy{}, &corev1.Pod{}
		if !f.get(np, NetworkPolicyName(q.Name), ns) || len(np.Spec.Egress) != 1 || np.Labels[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue {
			t.Fatalf("NetworkPolicy: %+v", np)
		}
		if f.get(pod, "shop-1", ns); pod.Labels[securityv1alpha1.QuarantineLabel] != q.Name {
			t.Fatalf("pod labels %v", pod.Labels)
		}
		if o := f.revert(q, a, st); !o.Changed || st.State != securityv1alpha1.ActionReverted || st.RevertedAt == nil {
			t.Fatalf("revert: %+v %+v", o, st)
		}
		if f.get(np, NetworkPolicyName(q.Name), ns) {
			t.Fatal("NetworkPolicy left behind")
		}
		if f.get(pod, "shop-1", ns); pod.Labels[securityv1alpha1.QuarantineLabel] != "" {
			t.Fatalf("pod still labelled: %v", pod.Labels)
		}
	})

	t.Run("tampered policy is repaired", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		np := &networkingv1.NetworkPolicy{}
		f.get(np, NetworkPolicyName(q.Name), ns)
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
		f.update(np)
		if o, n := f.apply(q, a, st); !o.Repaired || n == 0 {
			t.Fatalf("repair: %+v, %d writes", o, n)
		}
	})

	// Isolate's revert is marker-driven: a NetworkPolicy someone took over
	// (no longer marked managed-by Bulkhead) is left alone. The action
	// still counts as Reverted: what Bulkhead owned is gone.
	t.Run("revert leaves a policy someone took over", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		np := &networkingv1.NetworkPolicy{}
		f.get(np, NetworkPolicyName(q.Name), ns)
		delete(np.Labels, securityv1alpha1.ManagedByLabel)
		f.update(np)
		f.revert(q, a, st)
		if !f.get(np, NetworkPolicyName(q.Name), ns) {
			t.Fatal("deleted a NetworkPolicy Bulkhead no longer owns")
		}
		if st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("state %s", st.State)
		}
	})
}
