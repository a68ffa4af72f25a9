package containment

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// ObjectRef names an object in the Quarantine's namespace (or a node).
type ObjectRef struct {
	APIVersion string
	Kind       string
	Name       string
}

// String is Kind/name, as shown in status.
func (r ObjectRef) String() string { return r.Kind + "/" + r.Name }

// GVK of the reference.
func (r ObjectRef) GVK() schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
}

// Target is the contained object as found now.
type Target struct {
	// UID of the target object (the pod, or the workload).
	UID string
	// Pods contained: the pod, or the workload's pods.
	Pods []corev1.Pod
	// Node the pod runs on (Pod targets only).
	Node string
	// Chain is the controller owner chain from the pod up.
	Chain []ObjectRef
	// Workload is the top controller, which ScaleToZero acts on; nil when the
	// pod has none or its chain is broken.
	Workload *ObjectRef
	// BrokenChain says which owner could not be found.
	BrokenChain string
	// Selector selects the workload's pods (workload targets).
	Selector *metav1.LabelSelector
	// workload is the top controller as read while walking the chain, so
	// ScaleToZero in the same pass needs no second read.
	workload *unstructured.Unstructured
}

// workloadObject returns a copy of the top controller read by Resolve when
// it is ref, or nil.
func (t *Target) workloadObject(ref ObjectRef) *unstructured.Unstructured {
	if t == nil || t.workload == nil || t.Workload == nil || *t.Workload != ref {
		return nil
	}
	return t.workload.DeepCopy()
}

// Resolve finds the target now. It returns ErrTargetNotFound when the target
// is gone or, given a recorded uid, was replaced by a new object.
func (e *Engine) Resolve(ctx context.Context, q *securityv1alpha1.Quarantine) (*Target, error) {
	recorded := ""
	if q.Status.Target != nil {
		recorded = q.Status.Target.UID
	}
	switch q.Spec.Target.Kind {
	case securityv1alpha1.TargetDeployment, securityv1alpha1.TargetStatefulSet:
		return e.resolveWorkload(ctx, q, recorded)
	default:
		return e.resolvePod(ctx, q, recorded)
	}
}

func (e *Engine) resolvePod(ctx context.Context, q *securityv1alpha1.Quarantine, recorded string) (*Target, error) {
	pod := &corev1.Pod{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: q.Namespace, Name: q.Spec.Target.Name}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pod %s: %w", q.Spec.Target.Name, ErrTargetNotFound)
		}
		return nil, err
	}
	if recorded != "" && string(pod.UID) != recorded {
		return nil, fmt.Errorf("pod %s was replaced (uid %s, recorded %s): %w", pod.Name, pod.UID, recorded, ErrTargetNotFound)
	}
	t := &Target{UID: string(pod.UID), Pods: []corev1.Pod{*pod}, Node: pod.Spec.NodeName}
	if err := e.walkOwners(ctx, q.Namespace, pod.OwnerReferences, t); err != nil {
		return nil, err
	}
	return t, nil
}

// walkOwners follows controller owner references up to the top controller.
func (e *Engine) walkOwners(ctx context.Context, ns string, refs []metav1.OwnerReference, t *Target) error {
	for range 8 { // owner chains are short; a cycle must not spin
		ref := metav1.GetControllerOfNoCopy(&metav1.ObjectMeta{OwnerReferences: refs})
		if ref == nil {
			return nil
		}
		o := ObjectRef{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name}
		t.Chain = append(t.Chain, o)
		// The whole object, not its metadata: the top one is what
		// ScaleToZero changes next, and owner chains are one or two long.
		m := &unstructured.Unstructured{}
		m.SetGroupVersionKind(o.GVK())
		if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, m); err != nil {
			if apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err) {
				t.Workload, t.workload, t.BrokenChain = nil, nil, fmt.Sprintf("owner %s not found", o)
				return nil
			}
			return err
		}
		if m.GetUID() != ref.UID {
			t.Workload, t.workload, t.BrokenChain = nil, nil, fmt.Sprintf("owner %s was replaced", o)
			return nil
		}
		t.Workload, t.workload = &o, m
		refs = m.GetOwnerReferences()
	}
	return nil
}

func (e *Engine) resolveWorkload(ctx context.Context, q *securityv1alpha1.Quarantine, recorded string) (*Target, error) {
	key := client.ObjectKey{Namespace: q.Namespace, Name: q.Spec.Target.Name}
	var (
		obj      client.Object
		selector *metav1.LabelSelector
	)
	if q.Spec.Target.Kind == securityv1alpha1.TargetDeployment {
		d := &appsv1.Deployment{}
		obj = d
		if err := e.Reader.Get(ctx, key, d); err != nil {
			return nil, notFound(err, "deployment", key.Name)
		}
		selector = d.Spec.Selector
	} else {
		s := &appsv1.StatefulSet{}
		obj = s
		if err := e.Reader.Get(ctx, key, s); err != nil {
			return nil, notFound(err, "statefulset", key.Name)
		}
		selector = s.Spec.Selector
	}
	if recorded != "" && string(obj.GetUID()) != recorded {
		return nil, fmt.Errorf("%s %s was replaced: %w", q.Spec.Target.Kind, key.Name, ErrTargetNotFound)
	}
	self := ObjectRef{APIVersion: "apps/v1", Kind: string(q.Spec.Target.Kind), Name: key.Name}
	t := &Target{UID: string(obj.GetUID()), Workload: &self, Chain: []ObjectRef{self}, Selector: selector}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || sel.Empty() {
		// An empty selector would contain the whole namespace.
		return nil, fmt.Errorf("%s %s has no usable selector: %w", q.Spec.Target.Kind, key.Name, ErrTargetNotFound)
	}
	pods := &corev1.PodList{}
	if err := e.Reader.List(ctx, pods, client.InNamespace(q.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	t.Pods = pods.Items
	return t, nil
}

func notFound(err error, kind, name string) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s %s: %w", kind, name, ErrTargetNotFound)
	}
	return err
}

// parseResource turns a status Kind/name and apiVersion back into a reference.
func parseResource(resource, apiVersion string) (ObjectRef, bool) {
	kind, name, ok := strings.Cut(resource, "/")
	if !ok || apiVersion == "" {
		return ObjectRef{}, false
	}
	return ObjectRef{APIVersion: apiVersion, Kind: kind, Name: name}, true
}

// podSelectorFor is what the NetworkPolicy selects: the quarantine label for
// a pod; for a workload, its own selector too, so replacement pods are
// isolated before Bulkhead labels them.
func podSelectorFor(s *Scope) metav1.LabelSelector {
	if s.Target != nil && s.Target.Selector != nil && !kubeutil.IsPodTarget(s.Q.Spec.Target) {
		return *s.Target.Selector.DeepCopy()
	}
	return metav1.LabelSelector{MatchLabels: map[string]string{securityv1alpha1.QuarantineLabel: s.Q.Name}}
}

// selects reports whether a label selector matches a set of labels.
func selects(ls *metav1.LabelSelector, l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(l))
}

// OwnerChain is the controller owner chain as Kind/name, pod first.
func (t *Target) OwnerChain() []string {
	out := make([]string, 0, len(t.Chain))
	for _, o := range t.Chain {
		out = append(out, o.String())
	}
	return out
}
