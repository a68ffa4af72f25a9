package podresponse

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Issue 14 item 14: one namespace floods decoys that trip the policy; it
// spends only its share of the budget, and a second namespace's pod is
// still contained.
func TestDecoyFloodLeavesBudgetForOtherNamespaces(t *testing.T) {
	flood := newNamespace(t, "decoy-1", "decoy-2", "decoy-3", "decoy-4")
	// A second namespace the same policy selects.
	victim := flood + "-v"
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: victim, Labels: map[string]string{"test": flood}}}); err != nil {
		t.Fatal(err)
	}
	newPod(t, victim, "shop-1")
	p := newPolicy(t, flood, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Safeguards.MaxActiveQuarantines = 4 // the default share, 50%: 2 per namespace
	})
	for _, pod := range []string{"decoy-1", "decoy-2", "decoy-3", "decoy-4"} {
		postFalco(t, flood, pod, "Critical")
	}
	// Every decoy decided: contained, or planned and blocked.
	policyStatus(t, p.Name, func(tp *securityv1alpha1.ThreatPolicy) error {
		blocked := 0
		for _, pl := range tp.Status.Plans {
			if pl.Namespace == flood && pl.BlockedBy != "" {
				blocked++
			}
		}
		if n := len(quarantines(t, flood)); n+blocked != 4 {
			return fmt.Errorf("%d contained, %d blocked", n, blocked)
		}
		return nil
	})
	postFalco(t, victim, "shop-1", "Critical")
	onlyQuarantine(t, victim, func(q *securityv1alpha1.Quarantine) error {
		if q.Spec.Target.Name != "shop-1" {
			return fmt.Errorf("target %s", q.Spec.Target.Name)
		}
		return nil
	})
	policyStatus(t, p.Name, func(tp *securityv1alpha1.ThreatPolicy) error {
		for _, pl := range tp.Status.Plans {
			if pl.BlockedBy == policy.BlockedNamespaceShare {
				return nil
			}
		}
		return fmt.Errorf("no plan blocked by %s: %+v", policy.BlockedNamespaceShare, tp.Status.Plans)
	})
	if n := len(quarantines(t, flood)); n != 2 {
		t.Fatalf("the flooding namespace holds %d Quarantines, want its share 2", n)
	}
}

// Issue 14 item 14: CordonNode has its own cap; beyond it the pod is still
// contained with the step's other actions.
func TestCordonCapLeavesOtherActions(t *testing.T) {
	ns := newNamespace(t, "shop-1", "shop-2")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		one := int32(1)
		s.Safeguards.MaxCordonedNodes = &one
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "my-model", Weight: 1}}
	})
	postScore(t, ns, "shop-1", "my-model", 0.99)
	eventually(t, func() error {
		q := quarantineOf(t, ns, "shop-1")
		if q == nil || actionTypes(q) != "Isolate,ScaleToZero,CordonNode" {
			return fmt.Errorf("shop-1: %v", q)
		}
		return nil
	})
	postScore(t, ns, "shop-2", "my-model", 0.99)
	eventually(t, func() error {
		q := quarantineOf(t, ns, "shop-2")
		if q == nil || actionTypes(q) != "Isolate,ScaleToZero" {
			return fmt.Errorf("shop-2 must be contained without CordonNode: %v", q)
		}
		return nil
	})
}
