package containment

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func flavor(t *testing.T, kind string) denyFlavor {
	t.Helper()
	for _, f := range DenyFlavors {
		if f.gvk.Kind == kind {
			return f
		}
	}
	t.Fatalf("no flavor %s", kind)
	return denyFlavor{}
}

// Cilium's deny rules win over every allow, but a plain allow does not: with
// allowDNS the policy must still deny all other egress, or another
// CiliumNetworkPolicy or NetworkPolicy allowing egress reopens the pod.
func TestCiliumAllowDNSStillDeniesEgress(t *testing.T) {
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q"}}
	for _, dns := range []bool{false, true} {
		u := flavor(t, "CiliumNetworkPolicy").Object(q, dns)
		deny, _, _ := unstructured.NestedSlice(u.Object, "spec", "egressDeny")
		if len(deny) == 0 {
			t.Fatalf("allowDNS=%v: no egressDeny, so other allows still win", dns)
		}
		var entities []string
		endpoints := 0
		for _, r := range deny {
			e, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "toEntities")
			entities = append(entities, e...)
			ep, _, _ := unstructured.NestedSlice(r.(map[string]any), "toEndpoints")
			endpoints += len(ep)
		}
		if !slices.Contains(entities, "all") && (!slices.Contains(entities, "world") || !slices.Contains(entities, "host") || endpoints == 0) {
			t.Fatalf("allowDNS=%v: egressDeny leaves the world, the host or other pods reachable: %v", dns, deny)
		}
		if dns && slices.Contains(entities, "all") {
			t.Fatal("allowDNS: a deny to all entities also cuts DNS (deny wins over the DNS allow)")
		}
	}
}

// The ClusterNetworkPolicy API has Accept, Deny and Pass; AdminNetworkPolicy
// has Allow, Deny and Pass.
func TestDenyActionsExistInTheirAPI(t *testing.T) {
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q"}}
	valid := map[string][]string{"AdminNetworkPolicy": {"Allow", "Deny", "Pass"}, "ClusterNetworkPolicy": {"Accept", "Deny", "Pass"}}
	for kind, actions := range valid {
		u := flavor(t, kind).Object(q, true)
		for _, dir := range []string{"ingress", "egress"} {
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", dir)
			for _, r := range rules {
				if a := r.(map[string]any)["action"]; !slices.Contains(actions, a.(string)) {
					t.Errorf("%s %s rule has action %v; the API has %v", kind, dir, a, actions)
				}
			}
		}
	}
}
