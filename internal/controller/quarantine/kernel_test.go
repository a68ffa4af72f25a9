package quarantine

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
)

func TestIsolationCondition(t *testing.T) {
	on := securityv1alpha1.KernelEnforcement{Pod: "a", Node: "n1", Enforced: true, ConnectionsCut: true}
	off := securityv1alpha1.KernelEnforcement{Pod: "a", Node: "n1", Message: "no BTF"}
	for _, tc := range []struct {
		name   string
		gaps   []string
		kernel []securityv1alpha1.KernelEnforcement
		pods   int
		prec   containment.Precedence
		status metav1.ConditionStatus
		reason string
		has    string
	}{
		{"no gaps, no sensor", nil, nil, 1, containment.Precedence{}, metav1.ConditionTrue, "Isolated", "no other NetworkPolicy"},
		{"gaps, no sensor", []string{"web/allow-all"}, nil, 1, containment.Precedence{}, metav1.ConditionFalse, "OtherPoliciesAdmit", "allow-all"},
		{"gaps, kernel drops", []string{"web/allow-all"}, []securityv1alpha1.KernelEnforcement{on}, 1, containment.Precedence{}, metav1.ConditionTrue, "KernelEnforced", "kernel drops"},
		{"gaps, sensor could not", []string{"web/allow-all"}, []securityv1alpha1.KernelEnforcement{off}, 1, containment.Precedence{}, metav1.ConditionFalse, "OtherPoliciesAdmit", "no BTF"},
		{"gaps, one of two pods enforced", []string{"web/allow-all"}, []securityv1alpha1.KernelEnforcement{on}, 2, containment.Precedence{}, metav1.ConditionFalse, "OtherPoliciesAdmit", "allow-all"},
		{"no gaps, kernel too", nil, []securityv1alpha1.KernelEnforcement{on}, 1, containment.Precedence{}, metav1.ConditionTrue, "Isolated", "kernel drops it too"},
		{"enforced but connections live", nil, []securityv1alpha1.KernelEnforcement{{Pod: "a", Node: "n1", Enforced: true, Message: "no sock_destroy"}}, 1,
			containment.Precedence{}, metav1.ConditionTrue, "Isolated", "live connections not cut"},
		// Issue 15 item 4: Bulkhead's own AdminNetworkPolicy deny comes before
		// every NetworkPolicy, so their allows do not make isolation ineffective...
		{"gaps, own admin deny in force", []string{"web/allow-all"}, nil, 1, containment.Precedence{Overriding: []string{"AdminNetworkPolicy/bulkhead-web-q"}},
			metav1.ConditionTrue, "DenyOverrides", "AdminNetworkPolicy/bulkhead-web-q"},
		// ...but another one tied at the top priority with an Allow may win.
		{"own admin deny with a rival", nil, nil, 1,
			containment.Precedence{Overriding: []string{"AdminNetworkPolicy/bulkhead-web-q"}, Rivals: []string{"AdminNetworkPolicy/allow-monitoring"}},
			metav1.ConditionFalse, "OtherPoliciesAdmit", "allow-monitoring"},
		{"rival, kernel drops", nil, []securityv1alpha1.KernelEnforcement{on}, 1,
			containment.Precedence{Overriding: []string{"GlobalNetworkPolicy/bulkhead-web-q"}, Rivals: []string{"GlobalNetworkPolicy/early-allow"}},
			metav1.ConditionTrue, "KernelEnforced", "early-allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := isolationCondition(tc.gaps, tc.prec, tc.kernel, tc.pods)
			if c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.has) {
				t.Fatalf("got %s/%s %q, want %s/%s containing %q", c.Status, c.Reason, c.Message, tc.status, tc.reason, tc.has)
			}
		})
	}
}
