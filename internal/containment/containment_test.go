package containment

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestAdmittingPolicies(t *testing.T) {
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop", securityv1alpha1.QuarantineLabel: "q"}}}
	sel := func(l map[string]string) metav1.LabelSelector { return metav1.LabelSelector{MatchLabels: l} }
	np := func(name string, s metav1.LabelSelector, types []networkingv1.PolicyType, in, eg int) networkingv1.NetworkPolicy {
		p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.NetworkPolicySpec{PodSelector: s, PolicyTypes: types}}
		p.Spec.Ingress = make([]networkingv1.NetworkPolicyIngressRule, in)
		p.Spec.Egress = make([]networkingv1.NetworkPolicyEgressRule, eg)
		return p
	}
	ing, egr := networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress
	policies := []networkingv1.NetworkPolicy{
		np("bulkhead-q", sel(map[string]string{securityv1alpha1.QuarantineLabel: "q"}), []networkingv1.PolicyType{ing, egr}, 0, 1), // ours
		np("allow-web", sel(map[string]string{"app": "shop"}), nil, 1, 0),                                                          // default type Ingress
		np("deny-all", sel(nil), []networkingv1.PolicyType{ing, egr}, 0, 0),                                                        // admits nothing
		np("egress-all", sel(nil), []networkingv1.PolicyType{egr}, 0, 1),                                                           // empty selector: every pod
		np("other-app", sel(map[string]string{"app": "cart"}), nil, 1, 0),                                                          // does not select
		np("ingress-rules-egress-only", sel(nil), []networkingv1.PolicyType{egr}, 1, 0),                                            // ingress ignored
	}
	got := AdmittingPolicies([]corev1.Pod{pod}, policies, "bulkhead-q")
	if strings.Join(got, ",") != "allow-web,egress-all" {
		t.Fatalf("got %v", got)
	}
}

func TestAppendAuditKeepsHeadAndTail(t *testing.T) {
	st := &securityv1alpha1.QuarantineStatus{}
	now := metav1.NewTime(time.Unix(0, 0))
	for i := range 75 {
		AppendAudit(st, now, Actor, "E", fmt.Sprint(i))
	}
	if len(st.Audit) != AuditHead+AuditTail || st.AuditDropped != 25 {
		t.Fatalf("len %d dropped %d", len(st.Audit), st.AuditDropped)
	}
	if st.Audit[0].Message != "0" || st.Audit[AuditHead-1].Message != "9" || st.Audit[AuditHead].Message != "35" || st.Audit[len(st.Audit)-1].Message != "74" {
		t.Fatalf("head/tail wrong: %s %s %s", st.Audit[AuditHead-1].Message, st.Audit[AuditHead].Message, st.Audit[len(st.Audit)-1].Message)
	}
}

func TestHolders(t *testing.T) {
	if got := withHolder([]string{"b/x", "a/y"}, "a/a"); got != "a/a,a/y,b/x" {
		t.Fatal(got)
	}
	if got := withHolder([]string{"a/a"}, "a/a"); got != "a/a" {
		t.Fatal(got)
	}
	if got := withoutHolder([]string{"a/a", "b/b"}, "a/a"); got != "b/b" {
		t.Fatal(got)
	}
	if got := holders(map[string]string{HoldersAnnotation: "a/a,b/b"}); len(got) != 2 {
		t.Fatal(got)
	}
}

func TestAddKeys(t *testing.T) {
	have := map[string]string{"team": "blue", "mine": "old"}
	out, marked, skipped := addKeys(have, map[string]string{"team": "red", "new": "1", "mine": "x"}, []string{"mine"})
	if out["team"] != "blue" || out["new"] != "1" || strings.Join(marked, ",") != "mine,new" || strings.Join(skipped, ",") != "team" {
		t.Fatalf("%v %v %v", out, marked, skipped)
	}
}

func TestOwnerChainIsKindSlashName(t *testing.T) {
	tg := &Target{Chain: []ObjectRef{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs"}, {APIVersion: "apps/v1", Kind: "Deployment", Name: "d"}}}
	if got := strings.Join(tg.OwnerChain(), ","); got != "ReplicaSet/rs,Deployment/d" {
		t.Fatal(got)
	}
}
