package quarantine

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	must(t, direct.Get(ctx, client.ObjectKey{Name: name}, n))
	return n
}

func tainted(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == securityv1alpha1.QuarantineTaintKey && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

// Two quarantines on one node share the cordon: uncordoned when the last
// releases.
func TestCordonNodeShared(t *testing.T) {
	f := newFixture(t, 2)
	before := f.snapshot(t)
	w := &writes{failAfter: -1}
	r, _ := newReconciler(w.client())
	a := f.quarantine(t, "qa", f.pods[0].Name, act(securityv1alpha1.ActionCordonNode))
	b := f.quarantine(t, "qb", f.pods[1].Name, act(securityv1alpha1.ActionCordonNode))
	qa := drive(t, r, a, phaseIs(securityv1alpha1.PhaseContained))
	drive(t, r, b, phaseIs(securityv1alpha1.PhaseContained))
	n := node(t, f.node)
	if !n.Spec.Unschedulable || !tainted(n) {
		t.Fatalf("node not cordoned and tainted: %+v", n.Spec)
	}
	if st := actionState(qa, securityv1alpha1.ActionCordonNode); st.NodeWasCordoned == nil || *st.NodeWasCordoned || st.Resource != "Node/"+f.node {
		t.Fatalf("%+v", st)
	}
	c := w.n.Load()
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: a}); err != nil {
		t.Fatal(err)
	}
	if w.n.Load() != c {
		t.Fatal("a second pass wrote")
	}
	release(t, a)
	drive(t, r, a, released)
	if n := node(t, f.node); !n.Spec.Unschedulable || !tainted(n) {
		t.Fatal("uncordoned while qb still holds the node")
	}
	release(t, b)
	drive(t, r, b, released)
	if after := f.snapshot(t); after != before {
		t.Fatalf("not as before:\nbefore %s\nafter %s", before, after)
	}
}

func TestCordonNodeAlreadyCordonedStaysCordoned(t *testing.T) {
	f := newFixture(t, 1)
	n := node(t, f.node)
	base := n.DeepCopy()
	n.Spec.Unschedulable = true
	must(t, direct.Patch(ctx, n, client.MergeFrom(base)))
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qa", f.pods[0].Name, act(securityv1alpha1.ActionCordonNode))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionCordonNode); st.NodeWasCordoned == nil || !*st.NodeWasCordoned {
		t.Fatalf("%+v", st)
	}
	release(t, key)
	drive(t, r, key, released)
	n = node(t, f.node)
	if !n.Spec.Unschedulable || tainted(n) {
		t.Fatalf("want still cordoned (by someone else) and untainted: %+v", n.Spec)
	}
}

func TestCordonNodeRefusals(t *testing.T) {
	f := newFixture(t, 1)
	cp := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.node + "-cp", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}}
	must(t, direct.Create(ctx, cp))
	f2 := *f
	f2.node = cp.Name
	cpPod := f2.pod(t, "on-control-plane", map[string]string{"app": "x"}, nil)
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qcp", cpPod.Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionCordonNode))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionCordonNode); st.State != securityv1alpha1.ActionRefused || !strings.Contains(st.Message, "control-plane") {
		t.Fatalf("%+v", st)
	}
	// minSchedulableNodes: with every schedulable node counted, cordoning
	// one would go below the floor.
	nodes := &corev1.NodeList{}
	must(t, direct.List(ctx, nodes))
	r.MinSchedulableNodes = len(nodes.Items)
	key = f.quarantine(t, "qmin", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionCordonNode))
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionCordonNode); st.State != securityv1alpha1.ActionRefused || !strings.Contains(st.Message, "minSchedulableNodes") {
		t.Fatalf("%+v", st)
	}
	if node(t, f.node).Spec.Unschedulable {
		t.Fatal("cordoned despite the floor")
	}
}

// A policy-made Quarantine takes the minSchedulableNodes its policy stamped
// into its spec; the controller reads no ThreatPolicy (none exists here).
func TestCordonNodePolicyFloor(t *testing.T) {
	f := newFixture(t, 1)
	nodes := &corev1.NodeList{}
	must(t, direct.List(ctx, nodes))
	floor := int32(len(nodes.Items))
	r, _ := newReconciler(direct)
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "qpol", Namespace: f.ns, Labels: map[string]string{securityv1alpha1.PolicyLabel: "floor-" + f.ns}, Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "floor-" + f.ns}},
		Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: f.pods[0].Name}, Actions: []securityv1alpha1.Action{
			act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionCordonNode),
		}, Safeguards: &securityv1alpha1.QuarantineSafeguards{MinSchedulableNodes: &floor}},
	}
	must(t, direct.Create(ctx, q))
	q = drive(t, r, client.ObjectKeyFromObject(q), phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionCordonNode); st.State != securityv1alpha1.ActionRefused || !strings.Contains(st.Message, "minSchedulableNodes") {
		t.Fatalf("policy floor ignored: %+v", st)
	}
	if node(t, f.node).Spec.Unschedulable {
		t.Fatal("cordoned despite the stamped floor")
	}
}
