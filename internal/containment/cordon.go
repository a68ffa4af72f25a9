package containment

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// controlPlaneLabels mark nodes CordonNode never touches.
var controlPlaneLabels = []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}

func isControlPlane(n *corev1.Node) bool {
	return slices.ContainsFunc(controlPlaneLabels, func(l string) bool { _, ok := n.Labels[l]; return ok })
}

func quarantineTaint() corev1.Taint {
	return corev1.Taint{Key: securityv1alpha1.QuarantineTaintKey, Effect: corev1.TaintEffectNoSchedule}
}

func hasQuarantineTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(new(quarantineTaint())) })
}

// cordon holds the target pod's node: cordoned and tainted, with the
// holders and the node's earlier state recorded on it.
type cordon struct{}

func (cordon) Traits() Traits { return Traits{} }

func (cordon) Plan(s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) {
	if s.Target != nil && s.Target.Node != "" {
		st.Resource, st.ResourceAPIVersion = "Node/"+s.Target.Node, "v1"
	}
}

func (cordon) Apply(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	nodeName, refusal := nodeToCordon(s)
	if refusal != "" {
		st.State, st.Message = securityv1alpha1.ActionRefused, refusal
		return Outcome{}, nil
	}
	node := &corev1.Node{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Name: nodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("node %s not found", nodeName)
			return Outcome{}, nil
		}
		return Outcome{}, err
	}
	if isControlPlane(node) {
		st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("node %s is a control-plane node", node.Name)
		return Outcome{}, nil
	}
	st.Resource, st.ResourceAPIVersion = "Node/"+node.Name, "v1"
	hs := holders(node.Annotations)
	held := slices.Contains(hs, s.Holder())
	if held && node.Spec.Unschedulable && hasQuarantineTaint(node) {
		st.State, st.NodeWasCordoned = securityv1alpha1.ActionApplied, wasCordoned(node)
		return Outcome{}, nil
	}
	if !held && !node.Spec.Unschedulable {
		left, err := e.schedulableNodesWithout(ctx, node.Name)
		if err != nil {
			return Outcome{}, err
		}
		if left < e.MinSchedulableNodes {
			st.State, st.Message = securityv1alpha1.ActionRefused, fmt.Sprintf("cordoning %s would leave %d schedulable nodes, below minSchedulableNodes %d", node.Name, left, e.MinSchedulableNodes)
			return Outcome{}, nil
		}
	}
	// Undo record, cordon and taint in one write.
	base := node.DeepCopy()
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	if len(hs) == 0 {
		node.Annotations[WasCordonedAnnotation] = strconv.FormatBool(node.Spec.Unschedulable)
	}
	node.Annotations[HoldersAnnotation] = withHolder(hs, s.Holder())
	node.Spec.Unschedulable = true
	if !hasQuarantineTaint(node) {
		node.Spec.Taints = append(node.Spec.Taints, quarantineTaint())
	}
	if err := e.Client.Patch(ctx, node, lockedPatch(base), kubeutil.FieldOwner); err != nil {
		return Outcome{}, err
	}
	st.State, st.NodeWasCordoned = securityv1alpha1.ActionApplied, wasCordoned(node)
	return Outcome{Changed: true}, nil
}

// nodeToCordon is the node the target runs on, or why there is none.
func nodeToCordon(s *Scope) (string, string) {
	switch {
	case s.Target != nil && s.Target.Node != "":
		return s.Target.Node, ""
	case s.Target == nil && s.Q.Status.Target != nil && s.Q.Status.Target.Node != "":
		// The pod is gone (often removed by ScaleToZero a moment ago): the
		// node it ran on was recorded at creation and is still the one to hold.
		return s.Q.Status.Target.Node, ""
	case !kubeutil.IsPodTarget(s.Q.Spec.Target):
		return "", "a workload spans nodes: CordonNode needs a Pod target"
	case s.Target == nil:
		return "", "the target is gone and its node was never recorded"
	default:
		return "", "the pod is not scheduled to a node"
	}
}

func wasCordoned(n *corev1.Node) *bool {
	v, err := strconv.ParseBool(n.Annotations[WasCordonedAnnotation])
	if err != nil {
		return nil
	}
	return &v
}

// schedulableNodesWithout counts schedulable worker nodes other than name.
func (e *Engine) schedulableNodesWithout(ctx context.Context, name string) (int, error) {
	nodes := &corev1.NodeList{}
	if err := e.Reader.List(ctx, nodes); err != nil {
		return 0, err
	}
	n := 0
	for i := range nodes.Items {
		x := &nodes.Items[i]
		if x.Name != name && !x.Spec.Unschedulable && !isControlPlane(x) {
			n++
		}
	}
	return n, nil
}

func (cordon) Revert(ctx context.Context, e *Engine, s *Scope, _ securityv1alpha1.Action, st *securityv1alpha1.ActionStatus) (Outcome, error) {
	ref, ok := parseResource(st.Resource, st.ResourceAPIVersion)
	if !ok {
		st.State, st.Message = securityv1alpha1.ActionReverted, "no node was cordoned"
		return Outcome{}, nil
	}
	node := &corev1.Node{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Name: ref.Name}, node); err != nil {
		if apierrors.IsNotFound(err) {
			st.State, st.Message = securityv1alpha1.ActionNotReverted, fmt.Sprintf("node %s was deleted meanwhile", ref.Name)
			return Outcome{}, nil
		}
		return Outcome{}, err
	}
	hs := holders(node.Annotations)
	if !slices.Contains(hs, s.Holder()) {
		st.State = securityv1alpha1.ActionReverted
		return Outcome{}, nil
	}
	base := node.DeepCopy()
	if rest := withoutHolder(hs, s.Holder()); rest != "" {
		node.Annotations[HoldersAnnotation] = rest
		st.State, st.Message = securityv1alpha1.ActionReverted, "still held by "+rest+"; uncordoned when the last holder releases"
	} else {
		uncordonNode(node)
		st.State, st.Message = securityv1alpha1.ActionReverted, ""
		if node.Spec.Unschedulable && node.Annotations[KeepCordonedAnnotation] == "true" {
			st.Message = "left cordoned: an administrator set " + KeepCordonedAnnotation
		}
	}
	return Outcome{Changed: true}, e.Client.Patch(ctx, node, lockedPatch(base), kubeutil.FieldOwner)
}

// uncordonNode removes the taint and the undo record, and uncordons only a
// node Bulkhead cordoned and no administrator asked to keep cordoned.
func uncordonNode(node *corev1.Node) {
	if was := wasCordoned(node); (was == nil || !*was) && node.Annotations[KeepCordonedAnnotation] != "true" {
		node.Spec.Unschedulable = false
	}
	node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == securityv1alpha1.QuarantineTaintKey })
	delete(node.Annotations, HoldersAnnotation)
	delete(node.Annotations, WasCordonedAnnotation)
}

// Leftovers uncordons nodes whose every holder is gone, and drops gone
// holders from the others.
func (cordon) Leftovers(ctx context.Context, e *Engine, live Live) (int, error) {
	n := 0
	nodes := &corev1.NodeList{}
	if err := e.Reader.List(ctx, nodes); err != nil {
		return n, err
	}
	for i := range nodes.Items {
		node := &nodes.Items[i]
		hs := holders(node.Annotations)
		if len(hs) == 0 {
			continue
		}
		var keep []string
		for _, h := range hs {
			ns, name, _ := strings.Cut(h, "/")
			ok, err := live(ctx, ns, name)
			if err != nil {
				return n, err
			}
			if ok {
				keep = append(keep, h)
			}
		}
		if len(keep) == len(hs) {
			continue
		}
		base := node.DeepCopy()
		if len(keep) == 0 {
			uncordonNode(node)
		} else {
			slices.Sort(keep)
			node.Annotations[HoldersAnnotation] = strings.Join(keep, ",")
		}
		if err := e.Client.Patch(ctx, node, lockedPatch(base), kubeutil.FieldOwner); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
