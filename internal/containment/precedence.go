package containment

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Precedence is what the third-party policy APIs say about a Quarantine's
// isolation, beyond its NetworkPolicy.
type Precedence struct {
	// Overriding names Bulkhead's own deny objects in force that are
	// evaluated before every NetworkPolicy (Kind/name), so NetworkPolicy
	// allows do not reopen the pod where the network plugin implements them.
	Overriding []string
	// Rivals are other policies of those APIs that may allow traffic
	// before or alongside Bulkhead's deny (Kind/name): an AdminNetworkPolicy
	// or Admin-tier ClusterNetworkPolicy at the same top priority with an
	// Allow/Accept or Pass rule (the API leaves that order undefined), a
	// Calico policy ordered at or before Bulkhead's or in another tier with
	// Allow or Pass. Cilium has none: its deny rules win over every allow.
	Rivals []string
}

// rivalFunc reports whether another object of a flavor may allow traffic
// ahead of (or tied with) Bulkhead's deny.
type rivalFunc func(spec map[string]any) bool

func rival(f denyFlavor) rivalFunc {
	switch f.gvk.Kind {
	case "AdminNetworkPolicy":
		return func(spec map[string]any) bool {
			return number(spec["priority"]) <= 0 && hasAction(spec, "Allow", "Pass")
		}
	case "ClusterNetworkPolicy":
		return func(spec map[string]any) bool {
			return spec["tier"] == "Admin" && number(spec["priority"]) <= 0 && hasAction(spec, "Accept", "Pass")
		}
	case "GlobalNetworkPolicy":
		return func(spec map[string]any) bool {
			tier, _ := spec["tier"].(string)
			_, ordered := spec["order"]
			early := tier != "" && tier != "default" || ordered && number(spec["order"]) <= 0
			return early && hasAction(spec, "Allow", "Pass")
		}
	}
	return nil
}

func number(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return 0
}

func hasAction(spec map[string]any, actions ...string) bool {
	for _, dir := range []string{"ingress", "egress"} {
		rules, _ := spec[dir].([]any)
		for _, r := range rules {
			if m, ok := r.(map[string]any); ok && slices.Contains(actions, fmt.Sprint(m["action"])) {
				return true
			}
		}
	}
	return false
}

// ThirdPartyPrecedence reads, for each served flavor, whether Bulkhead's
// deny for the Quarantine is in force and which other policies rival it.
// Uncached reads of cluster-scoped policy lists: run on the re-check of an
// applied Isolate, not on the containment path.
func (e *Engine) ThirdPartyPrecedence(ctx context.Context, s *Scope) (Precedence, error) {
	var p Precedence
	flavors, err := e.servedFlavors()
	if err != nil {
		return p, err
	}
	for _, f := range flavors {
		want := f.object(s, false)
		have := &unstructured.Unstructured{}
		have.SetGroupVersionKind(f.gvk)
		if err := e.Reader.Get(ctx, client.ObjectKeyFromObject(want), have); err != nil {
			if ignoreNotFound(err) != nil {
				return p, err
			}
			continue
		}
		if !hasLabels(have.GetLabels(), want.GetLabels()) {
			continue
		}
		p.Overriding = append(p.Overriding, f.gvk.Kind+"/"+have.GetName())
		isRival := rival(f)
		if isRival == nil {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(f.gvk.GroupVersion().WithKind(f.gvk.Kind + "List"))
		if err := e.Reader.List(ctx, list); err != nil {
			return p, err
		}
		for i := range list.Items {
			o := &list.Items[i]
			// Bulkhead's other denies allow at most DNS, for their own pods.
			if o.GetName() == have.GetName() || o.GetLabels()[securityv1alpha1.ManagedByLabel] == securityv1alpha1.ManagedByValue {
				continue
			}
			if spec, _ := o.Object["spec"].(map[string]any); spec != nil && isRival(spec) {
				p.Rivals = append(p.Rivals, f.gvk.Kind+"/"+o.GetName())
			}
		}
	}
	slices.Sort(p.Rivals)
	return p, nil
}
