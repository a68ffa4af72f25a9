package install

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// TestOnlyViewerAggregates: of the shipped ClusterRoles only bulkhead-viewer
// carries an aggregation label, and only to the built-in view role.
func TestOnlyViewerAggregates(t *testing.T) {
	seen := map[string]bool{}
	for _, u := range readObjects(t, repoPath("dist", "install.yaml")) {
		if u.GetKind() != "ClusterRole" {
			continue
		}
		seen[u.GetName()] = true
		for k, v := range u.GetLabels() {
			if !strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
				continue
			}
			if u.GetName() != "bulkhead-viewer" || k != "rbac.authorization.k8s.io/aggregate-to-view" || v != "true" {
				t.Errorf("ClusterRole %s aggregates with %s=%s", u.GetName(), k, v)
			}
		}
		if u.GetName() == "bulkhead-viewer" && u.GetLabels()["rbac.authorization.k8s.io/aggregate-to-view"] != "true" {
			t.Error("bulkhead-viewer does not aggregate to view")
		}
	}
	for _, r := range []string{"bulkhead-viewer", "bulkhead-responder", "bulkhead-admin", "bulkhead-metrics-reader"} {
		if !seen[r] {
			t.Errorf("dist/install.yaml has no ClusterRole %s", r)
		}
	}
}

// TestViewerAndAdminRoles: a viewer reads but cannot write or approve; an
// admin writes ThreatPolicies and may approve.
func TestViewerAndAdminRoles(t *testing.T) {
	installOnce(t)
	waitForPolicy(t)
	bindRole(t, "vera", "bulkhead-viewer")
	bindRole(t, "ada", "bulkhead-admin")
	vera, ada := as(t, "vera"), as(t, "ada")

	q := quarantine("roles", securityv1alpha1.ActionIsolate)
	q.Spec.Approved = ptr.To(false)
	if err := ada.Create(ctx(t), q); err != nil {
		t.Fatalf("admin cannot create a Quarantine: %v", err)
	}
	var list securityv1alpha1.QuarantineList
	if err := vera.List(ctx(t), &list, client.InNamespace(testNS)); err != nil {
		t.Errorf("viewer cannot list Quarantines: %v", err)
	}
	var tps securityv1alpha1.ThreatPolicyList
	if err := vera.List(ctx(t), &tps); err != nil {
		t.Errorf("viewer cannot list ThreatPolicies: %v", err)
	}
	approve := func(c client.Client) error {
		cur := &securityv1alpha1.Quarantine{}
		if err := env.Client.Get(ctx(t), client.ObjectKeyFromObject(q), cur); err != nil {
			t.Fatal(err)
		}
		p := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Approved = ptr.To(true)
		return c.Patch(ctx(t), cur, p)
	}
	if err := approve(vera); err == nil {
		t.Error("viewer could approve a Quarantine")
	}
	if err := approve(ada); err != nil {
		t.Errorf("admin cannot approve: %v", err)
	}
	tp := readObjects(t, repoPath("config", "samples", "security_v1alpha1_threatpolicy_dryrun.yaml"))[0]
	if err := vera.Create(ctx(t), tp.DeepCopy(), client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Errorf("viewer creating a ThreatPolicy: got %v, want forbidden", err)
	}
	if err := ada.Create(ctx(t), tp.DeepCopy(), client.DryRunAll); err != nil {
		t.Errorf("admin cannot create a ThreatPolicy: %v", err)
	}
}
