package containment

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// A pod can vanish between passes once ScaleToZero (or Evict) has acted: its
// ReplicaSet deletes it. Actions not yet applied must then settle, or the
// Quarantine stays Containing for ever.
func TestActionsSettleWhenThePodIsGone(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	workers := []client.Object{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(workers...).Build()
	e := &Engine{Client: c, Reader: c, MinSchedulableNodes: 1}
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "web"},
		Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"}},
		Status:     securityv1alpha1.QuarantineStatus{Target: &securityv1alpha1.ResolvedTarget{UID: "u1", Node: "n1"}},
	}
	s := &Scope{Q: q} // Target nil: the pod is gone
	ctx := context.Background()

	cordon := &securityv1alpha1.ActionStatus{Type: securityv1alpha1.ActionCordonNode, State: securityv1alpha1.ActionPending, Resource: "Node/n1"}
	if _, err := e.Apply(ctx, s, securityv1alpha1.Action{Type: securityv1alpha1.ActionCordonNode}, cordon); err != nil {
		t.Fatal(err)
	}
	n := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, n); err != nil {
		t.Fatal(err)
	}
	if cordon.State != securityv1alpha1.ActionApplied || !n.Spec.Unschedulable || !hasQuarantineTaint(n) {
		t.Fatalf("CordonNode should hold the node the pod ran on: state %s (%s), node %+v", cordon.State, cordon.Message, n.Spec)
	}

	for _, a := range []securityv1alpha1.Action{
		{Type: securityv1alpha1.ActionIsolate},
		{Type: securityv1alpha1.ActionLabel, Label: &securityv1alpha1.LabelParams{Labels: map[string]string{"incident": "open"}}},
		{Type: securityv1alpha1.ActionDetach},
	} {
		st := &securityv1alpha1.ActionStatus{Type: a.Type, State: securityv1alpha1.ActionPending}
		if _, err := e.Apply(ctx, s, a, st); err != nil {
			t.Fatalf("%s: %v", a.Type, err)
		}
		if st.State != securityv1alpha1.ActionRefused {
			t.Errorf("%s on a gone pod: state %s, want Refused so the phase can settle", a.Type, st.State)
		}
	}

	// The NetworkPolicy was written but the manager died before recording
	// it: it counts as Applied, so release deletes it.
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: NetworkPolicyName(q.Name), Namespace: q.Namespace,
		Labels: map[string]string{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}}}
	if err := c.Create(ctx, np); err != nil {
		t.Fatal(err)
	}
	written := &securityv1alpha1.ActionStatus{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionPending}
	if _, err := e.Apply(ctx, s, securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate}, written); err != nil {
		t.Fatal(err)
	}
	if written.State != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate with its NetworkPolicy already written: state %s, want Applied so release removes it", written.State)
	}

	// Once applied, Isolate keeps its state: the NetworkPolicy stays until release.
	applied := &securityv1alpha1.ActionStatus{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionApplied}
	if _, err := e.Apply(ctx, s, securityv1alpha1.Action{Type: securityv1alpha1.ActionIsolate}, applied); err != nil {
		t.Fatal(err)
	}
	if applied.State != securityv1alpha1.ActionApplied {
		t.Fatalf("an applied Isolate became %s when the pod went away", applied.State)
	}
}
