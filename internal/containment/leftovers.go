package containment

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// Live reports whether a Quarantine (namespace, name) still holds what it did.
type Live func(ctx context.Context, namespace, name string) (bool, error)

// RemoveLeftovers cleans cluster-scoped changes no live Quarantine holds:
// node cordons and taints, and third-party cluster-wide deny policies. A
// Quarantine deleted while the manager was down (finalizer removed by hand)
// leaves these behind; namespaced ones go with their owner. It returns how
// many objects it changed.
func (e *Engine) RemoveLeftovers(ctx context.Context, live Live) (int, error) {
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
	for _, f := range DenyFlavors {
		if f.namespaced {
			continue
		}
		ok, err := e.served(f.gvk)
		if err != nil {
			return n, err
		}
		if !ok {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(f.gvk.GroupVersion().WithKind(f.gvk.Kind + "List"))
		if err := e.Reader.List(ctx, list, client.MatchingLabels{securityv1alpha1.ManagedByLabel: securityv1alpha1.ManagedByValue}); err != nil {
			return n, err
		}
		for i := range list.Items {
			l := list.Items[i].GetLabels()
			ok, err := live(ctx, l[QuarantineNamespaceLabel], l[securityv1alpha1.QuarantineLabel])
			if err != nil {
				return n, err
			}
			if ok {
				continue
			}
			if err := ignoreNotFound(e.Client.Delete(ctx, &list.Items[i])); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
