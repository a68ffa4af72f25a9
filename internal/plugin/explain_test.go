package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func policy(t *testing.T, name string, mode securityv1alpha1.PolicyMode, podApp string, maxActive int32, status securityv1alpha1.ThreatPolicyStatus) {
	t.Helper()
	ctx := context.Background()
	p := &securityv1alpha1.ThreatPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: securityv1alpha1.ThreatPolicySpec{
			Mode: mode,
			Selector: securityv1alpha1.PodSelection{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": podApp}},
			},
			Detectors: []securityv1alpha1.DetectorWeight{{Name: "behavior", Weight: 60}, {Name: "falco", Weight: 40}},
			Scoring: securityv1alpha1.Scoring{Threshold: "0.80", Sustain: 3,
				Exposure: securityv1alpha1.Exposure{Misconfiguration: true, Vulnerabilities: true}},
			Response: []securityv1alpha1.ResponseStep{
				{MinScore: "0.80", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate, Isolate: &securityv1alpha1.IsolateParams{AllowDNS: true}}}},
				{MinScore: "0.95", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionScaleToZero}, {Type: securityv1alpha1.ActionCordonNode}}},
			},
			Safeguards: securityv1alpha1.Safeguards{MaxActiveQuarantines: maxActive},
		},
	}
	if err := admin.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status = status
	if err := admin.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// section returns the lines of out from the one starting with start up to
// the next blank line.
func section(out, start string) string {
	_, rest, ok := strings.Cut(out, "\n"+start)
	if !ok {
		return ""
	}
	block, _, _ := strings.Cut(start+rest, "\n\n")
	return block
}

func TestExplain(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, map[string]string{"tier": "web"})
	mgr := namespace(t, nil)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: ns, Labels: map[string]string{"app": "shop"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "shop-7f9c", UID: "rs-uid", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}},
	}
	if err := admin.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(time.Now().Add(-20 * time.Minute).Truncate(time.Second))
	policy(t, "web-tier", securityv1alpha1.ModeEnforce, "shop", 10, securityv1alpha1.ThreatPolicyStatus{
		ActiveQuarantines: 2,
		LastTrigger:       &securityv1alpha1.Trigger{Time: now, Namespace: ns, Pod: "shop-1", Score: "0.97"},
		Detectors:         []securityv1alpha1.DetectorStatus{{Name: "behavior", LastSignalTime: &now}},
	})
	policy(t, "dry", securityv1alpha1.ModeDryRun, "shop", 10, securityv1alpha1.ThreatPolicyStatus{
		Plans: []securityv1alpha1.Plan{
			{Time: now, Namespace: ns, Pod: "other-pod", Score: "1"},
			{Time: now, Namespace: ns, Pod: "shop-1", Score: "0.85", Actions: []securityv1alpha1.ActionType{securityv1alpha1.ActionIsolate},
				Breakdown: []securityv1alpha1.ScoreComponent{
					{Source: "behavior", Score: "0.9", Weight: 60, Reason: "exec of /tmp/x"},
					{Source: "misconfiguration", Delta: "+0.05", Reason: "privileged container"},
				}},
		},
	})
	policy(t, "approval-budget", securityv1alpha1.ModeRequireApproval, "shop", 1, securityv1alpha1.ThreatPolicyStatus{ActiveQuarantines: 1})
	policy(t, "other", securityv1alpha1.ModeEnforce, "other", 10, securityv1alpha1.ThreatPolicyStatus{})

	explain := func() string { return mustRun(t, "explain", "shop-1", "-n", ns, "--manager-namespace", mgr) }
	out := explain()
	for _, want := range []string{
		"Owner:        ReplicaSet/shop-7f9c",
		"Containment:  active",
		"Policies covering this pod: 3 of 4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Protected:") {
		t.Errorf("an ordinary namespace is reported protected:\n%s", out)
	}
	if got := section(out, "Not covering:"); !strings.Contains(got, `other  podSelector "app=other" does not match`) {
		t.Errorf("not-covering section = %q", got)
	}

	web := section(out, "web-tier")
	for _, want := range []string{
		"behavior (weight 60, last signal 20m ago); falco (weight 40, no signal yet)",
		"threshold 0.80, sustain 3, exposure misconfiguration and vulnerabilities",
		"Budget:        2 of 10 active quarantines",
		"Latest score:  0.97 at " + now.UTC().Format(time.RFC3339) + " (last trigger)",
		"≥ 0.95  Isolate, ScaleToZero, CordonNode  ← latest score reaches this step",
		"Would:         after 3 consecutive evaluation(s) at or above 0.80: create a Quarantine applying Isolate, ScaleToZero, CordonNode",
	} {
		if !strings.Contains(web, want) {
			t.Errorf("web-tier section lacks %q:\n%s", want, web)
		}
	}
	dry := section(out, "dry")
	for _, want := range []string{
		"0.85 at", "(dry-run plan)",
		"behavior 0.9 (weight 60): exec of /tmp/x",
		"misconfiguration moved the score +0.05: privileged container",
		"≥ 0.80  Isolate  ← latest score reaches this step",
		"record a plan (Isolate) in status.plans and a WouldQuarantine Event; nothing is contained",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry section lacks %q:\n%s", want, dry)
		}
	}
	if got := section(out, "approval-budget"); !strings.Contains(got, "Would:         nothing: budget exhausted (1 of 1 active quarantines)") {
		t.Errorf("approval-budget section:\n%s", got)
	}

	mustRun(t, "pause", "--manager-namespace", mgr)
	out = explain()
	if !strings.Contains(out, "Containment:  PAUSED cluster-wide by "+user) {
		t.Errorf("paused cluster not reported:\n%s", out)
	}
	if got := section(out, "web-tier"); !strings.Contains(got, "record a plan (Isolate, ScaleToZero, CordonNode) in status.plans and a WouldQuarantine Event; nothing is contained (the cluster is paused)") {
		t.Errorf("paused Enforce policy:\n%s", got)
	}

	quarantine(t, ns, "shop-1", "shop-1", func(q *securityv1alpha1.Quarantine) { q.Status.Phase = securityv1alpha1.PhaseContained })
	mustRun(t, "resume", "--manager-namespace", mgr)
	out = explain()
	row(t, section(out, "Quarantines of this pod:"), "shop-1", "Contained", "score", "0.97")
	if got := section(out, "web-tier"); !strings.Contains(got, "already contained by Quarantine shop-1 (Contained); higher steps add their actions to it automatically") {
		t.Errorf("web-tier with an active quarantine:\n%s", got)
	}
	if got := section(out, "approval-budget"); !strings.Contains(got, "higher steps are recorded on it as recommendations for a human") {
		t.Errorf("approval-budget with an active quarantine:\n%s", got)
	}
}

func TestWouldRespectsSafeguards(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	p := &securityv1alpha1.ThreatPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web-tier"},
		Spec: securityv1alpha1.ThreatPolicySpec{
			Mode:     securityv1alpha1.ModeRequireApproval,
			Scoring:  securityv1alpha1.Scoring{Threshold: "0.80"},
			Response: []securityv1alpha1.ResponseStep{{MinScore: "0.80", Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}},
			Safeguards: securityv1alpha1.Safeguards{
				ProtectedNamespaces: []string{"payments"},
				Cooldown:            &metav1.Duration{Duration: 10 * time.Minute},
			},
		},
	}
	view := func(ns string, releasedAgo time.Duration) *podView {
		v := &podView{now: now, managerNS: "bulkhead-system"}
		v.pod.Namespace, v.pod.Name = ns, "shop-1"
		if releasedAgo > 0 {
			v.quarantines = []securityv1alpha1.Quarantine{{
				ObjectMeta: metav1.ObjectMeta{Name: "shop-1"},
				Spec:       securityv1alpha1.QuarantineSpec{Released: ptr.To(true)},
				Status:     securityv1alpha1.QuarantineStatus{Phase: securityv1alpha1.PhaseReleased, ReleasedAt: &metav1.Time{Time: now.Add(-releasedAgo)}},
			}}
		}
		return v
	}
	for name, tc := range map[string]struct {
		v    *podView
		want string
	}{
		"policy's protected namespace": {view("payments", 0), "nothing: the policy protects namespace payments"},
		"in cooldown":                  {view("web", 3*time.Minute), "nothing until 2026-11-24T12:07:00Z: cooldown after Quarantine shop-1 was released"},
		"cooldown over":                {view("web", 30*time.Minute), "after 1 consecutive evaluation(s) at or above 0.80: create an unapproved Quarantine (Isolate) that waits for `kubectl bulkhead approve`"},
	} {
		if got := tc.v.would(p, nil); got != tc.want {
			t.Errorf("%s: would = %q, want %q", name, got, tc.want)
		}
	}
	if !view("kube-system", 0).alwaysProtected() || !view("bulkhead-system", 0).alwaysProtected() || view("web", 0).alwaysProtected() {
		t.Error("always-protected namespaces misjudged")
	}
}
