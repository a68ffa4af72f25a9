package containment

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestCordonOnFakeClient(t *testing.T) {
	a := securityv1alpha1.Action{Type: securityv1alpha1.ActionCordonNode}
	q := quarantineOf(podTarget, a)

	t.Run("apply, apply again without writes, revert", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		n := &corev1.Node{}
		f.get(n, "n1", "")
		if !n.Spec.Unschedulable || !hasQuarantineTaint(n) || n.Annotations[HoldersAnnotation] != "web/q1" || st.NodeWasCordoned == nil || *st.NodeWasCordoned {
			t.Fatalf("node %+v, status %+v", n, st)
		}
		if o := f.revert(q, a, st); !o.Changed || st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("revert: %+v %+v", o, st)
		}
		f.get(n, "n1", "")
		if n.Spec.Unschedulable || hasQuarantineTaint(n) || n.Annotations[HoldersAnnotation] != "" {
			t.Fatalf("node after revert %+v", n)
		}
	})

	t.Run("an administrator's cordon added meanwhile survives release", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		n := &corev1.Node{}
		f.get(n, "n1", "")
		n.Annotations[KeepCordonedAnnotation] = "true"
		if err := f.c.Update(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if f.revert(q, a, st); st.State != securityv1alpha1.ActionReverted {
			t.Fatalf("state %s (%s)", st.State, st.Message)
		}
		f.get(n, "n1", "")
		if !n.Spec.Unschedulable || hasQuarantineTaint(n) || n.Annotations[HoldersAnnotation] != "" || n.Annotations[WasCordonedAnnotation] != "" {
			t.Fatalf("want the node still cordoned, without Bulkhead's taint and record: %+v", n)
		}
	})

	t.Run("revert of a node deleted meanwhile", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		st := f.applyTwice(q, a)
		n := &corev1.Node{}
		f.get(n, "n1", "")
		if err := f.c.Delete(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if f.revert(q, a, st); st.State != securityv1alpha1.ActionNotReverted {
			t.Fatalf("state %s (%s)", st.State, st.Message)
		}
	})

	t.Run("floor refuses", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		f.e.MinSchedulableNodes = 2
		st := &securityv1alpha1.ActionStatus{}
		if _, n := f.apply(q, a, st); st.State != securityv1alpha1.ActionRefused || n != 0 {
			t.Fatalf("state %s, %d writes", st.State, n)
		}
	})

	t.Run("leftovers of a gone holder", func(t *testing.T) {
		f := newFakeCluster(t, shop()...)
		f.applyTwice(q, a)
		n, err := f.e.RemoveLeftovers(context.Background(), func(context.Context, string, string) (bool, error) { return false, nil })
		node := &corev1.Node{}
		f.get(node, "n1", "")
		if err != nil || n != 1 || node.Spec.Unschedulable || hasQuarantineTaint(node) {
			t.Fatalf("%d %v %+v", n, err, node.Spec)
		}
	})
}
