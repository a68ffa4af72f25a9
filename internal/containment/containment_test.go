package containment

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func states(ss ...securityv1alpha1.ActionState) []securityv1alpha1.ActionStatus {
	out := make([]securityv1alpha1.ActionStatus, len(ss))
	for i, s := range ss {
		out[i] = securityv1alpha1.ActionStatus{Type: securityv1alpha1.ActionIsolate, State: s}
	}
	return out
}

func TestPhase(t *testing.T) {
	const (
		ap = securityv1alpha1.ActionApplied
		rf = securityv1alpha1.ActionRefused
		fl = securityv1alpha1.ActionFailed
		pe = securityv1alpha1.ActionPending
	)
	for _, c := range []struct {
		in   []securityv1alpha1.ActionStatus
		want securityv1alpha1.QuarantinePhase
	}{
		{nil, securityv1alpha1.PhaseContaining},
		{states(ap), securityv1alpha1.PhaseContained},
		{states(ap, rf), securityv1alpha1.PhaseContained},
		{states(ap, pe), securityv1alpha1.PhaseContaining},
		{states(rf, rf), securityv1alpha1.PhaseFailed},
		{states(rf, fl), securityv1alpha1.PhaseFailed},
		{states(ap, fl), securityv1alpha1.PhaseContained},
	} {
		if got := Phase(c.in); got != c.want {
			t.Errorf("Phase(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestNeedsRevert(t *testing.T) {
	for s, want := range map[securityv1alpha1.ActionState]bool{
		securityv1alpha1.ActionApplied: true, securityv1alpha1.ActionPending: true, securityv1alpha1.ActionFailed: true,
		securityv1alpha1.ActionRefused: false, securityv1alpha1.ActionReverted: false, securityv1alpha1.ActionNotReverted: false,
	} {
		if got := NeedsRevert(securityv1alpha1.ActionStatus{State: s}); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

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

func TestQuarantineName(t *testing.T) {
	taken := map[string]bool{"shop-1": true, "shop-1-2": true}
	if got := QuarantineName("shop-1", func(s string) bool { return taken[s] }); got != "shop-1-3" {
		t.Fatalf("got %s", got)
	}
	long := strings.Repeat("a", 62) + "-b" + strings.Repeat("c", 10)
	got := QuarantineName(long, func(string) bool { return false })
	if len(got) > MaxNameLength || strings.HasSuffix(got, "-") {
		t.Fatalf("got %q (%d)", got, len(got))
	}
	first := QuarantineName(long, func(string) bool { return false })
	second := QuarantineName(long, func(s string) bool { return s == first })
	if len(second) > MaxNameLength || !strings.HasSuffix(second, "-2") {
		t.Fatalf("got %q", second)
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

func TestEarlierHolder(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(100, 0))
	mk := func(name string, ts metav1.Time, phase securityv1alpha1.QuarantinePhase, released bool) securityv1alpha1.Quarantine {
		return securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: k8stypes.UID("uid-" + name), CreationTimestamp: ts},
			Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "pod"}, Released: &released},
			Status:     securityv1alpha1.QuarantineStatus{Phase: phase},
		}
	}
	later := metav1.NewTime(t0.Add(time.Second))
	q := mk("b", t0, "", false)
	cases := []struct {
		others []securityv1alpha1.Quarantine
		want   string
	}{
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseContained, false)}, "a"}, // same second: name decides
		{[]securityv1alpha1.Quarantine{mk("c", t0, "", false)}, ""},
		{[]securityv1alpha1.Quarantine{mk("z", metav1.NewTime(t0.Add(-time.Second)), "", false)}, "z"},
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseFailed, false)}, ""},
		{[]securityv1alpha1.Quarantine{mk("a", t0, securityv1alpha1.PhaseContained, true)}, ""},
		{[]securityv1alpha1.Quarantine{mk("a", later, "", false)}, ""},
	}
	for i, c := range cases {
		if got := EarlierHolder(&q, append(c.others, q)); got != c.want {
			t.Errorf("case %d: got %q, want %q", i, got, c.want)
		}
	}
}

func TestOwnerChainIsKindSlashName(t *testing.T) {
	tg := &Target{Chain: []ObjectRef{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs"}, {APIVersion: "apps/v1", Kind: "Deployment", Name: "d"}}}
	if got := strings.Join(tg.OwnerChain(), ","); got != "ReplicaSet/rs,Deployment/d" {
		t.Fatal(got)
	}
}
