package podresponse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detection/detectiontest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

func TestEnforceSustainAndEscalation(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Scoring.Sustain = 2
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 40}, {Name: "my-model", Weight: 60}}
	})

	postScore(t, ns, "shop-1", "my-model", 0.9)
	never(t, ns) // one evaluation is not sustain: 2

	postScore(t, ns, "shop-1", "my-model", 0.85)
	q := onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if actionTypes(q) != "Isolate" {
			return fmt.Errorf("actions %s", actionTypes(q))
		}
		return nil
	})
	if q.Name != "shop-1" || q.Spec.Target.Name != "shop-1" || !q.IsApproved() || q.IsReleased() ||
		q.Labels[securityv1alpha1.ManagedByLabel] != "bulkhead" || q.Labels[securityv1alpha1.PolicyLabel] != p.Name ||
		q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != p.Name ||
		q.Annotations[securityv1alpha1.ArgoCompareOptionsAnnotation] != "IgnoreExtraneous" ||
		q.Annotations[securityv1alpha1.FluxReconcileAnnotation] != "disabled" ||
		q.Spec.Reason.Policy != p.Name || !slices.Equal(q.Spec.Reason.Policies, []string{p.Name}) ||
		q.Spec.Reason.Detector != "my-model" || q.Spec.Reason.Score != "0.85" {
		t.Errorf("quarantine %+v %+v", q.ObjectMeta, q.Spec)
	}
	// The policy's CordonNode floor (the API default, 1) is stamped in.
	if s := q.Spec.Safeguards; s == nil || s.MinSchedulableNodes == nil || *s.MinSchedulableNodes != 1 {
		t.Errorf("safeguards %+v, want minSchedulableNodes 1 from the policy", s)
	}

	// A higher step adds actions to the same Quarantine.
	postScore(t, ns, "shop-1", "my-model", 1)
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if actionTypes(q) != "Isolate,ScaleToZero,CordonNode" || q.Spec.Reason.Score != "1" {
			return fmt.Errorf("actions %s score %s", actionTypes(q), q.Spec.Reason.Score)
		}
		return nil
	})

	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		st := p.Status
		ready := apimeta.FindStatusCondition(st.Conditions, securityv1alpha1.ConditionReady)
		switch {
		case st.ObservedGeneration != p.Generation || ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != p.Generation:
			return fmt.Errorf("conditions %+v", st.Conditions)
		case strings.Contains(ready.Message, "no detector named"):
			return fmt.Errorf("my-model has posted, yet: %s", ready.Message)
		case st.PodsCovered != 1 || st.ActiveQuarantines != 1:
			return fmt.Errorf("covered %d active %d", st.PodsCovered, st.ActiveQuarantines)
		case st.LastTrigger == nil || st.LastTrigger.Pod != "shop-1" || st.LastTrigger.Quarantine != "shop-1":
			return fmt.Errorf("lastTrigger %+v", st.LastTrigger)
		case len(st.Detectors) != 2 || st.Detectors[0].LastSignalTime == nil || st.Detectors[1].LastSignalTime == nil:
			return fmt.Errorf("detectors %+v", st.Detectors)
		case len(st.Plans) != 0:
			return fmt.Errorf("plans under Enforce: %+v", st.Plans)
		}
		// GitOps tools see no drift: Bulkhead owns status only.
		for _, mf := range p.ManagedFields {
			if mf.Manager == securityv1alpha1.FieldManager && mf.Subresource != "status" {
				return fmt.Errorf("bulkhead manages %s fields of the policy", mf.Subresource)
			}
		}
		return nil
	})
	q = onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	if !slices.ContainsFunc(q.ManagedFields, func(mf metav1.ManagedFieldsEntry) bool {
		return mf.Manager == securityv1alpha1.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("escalation was not server-side applied by %s: %+v", securityv1alpha1.FieldManager, q.ManagedFields)
	}
}

func TestRequireApprovalWithFalcoAndRecommendation(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeRequireApproval, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.ApprovalTimeout = &metav1.Duration{Duration: 30 * time.Minute}
	})
	postFalco(t, ns, "shop-1", "Notice") // 0.5: below
	never(t, ns)
	postFalco(t, ns, "shop-1", "Error") // 0.9
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if q.IsApproved() || q.Spec.ApprovalTimeout == nil || q.Spec.ApprovalTimeout.Duration != 30*time.Minute || actionTypes(q) != "Isolate" {
			return fmt.Errorf("spec %+v", q.Spec)
		}
		return nil
	})
	// Escalation outside Enforce is a recommendation, not an action. It is
	// written to the spec: the Quarantine controller, status's only writer,
	// reports it in status (internal/controller/quarantine).
	postFalco(t, ns, "shop-1", "Critical")
	q := onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if actionTypes(q) != "Isolate" || len(q.Spec.Recommendations) != 1 || len(q.Spec.Recommendations[0].Actions) != 2 {
			return fmt.Errorf("actions %s recommendations %+v", actionTypes(q), q.Spec.Recommendations)
		}
		return nil
	})
	if len(q.Status.Recommendations) != 0 || q.Status.Phase != "" {
		t.Errorf("the policy path wrote Quarantine status: %+v", q.Status)
	}
}

func TestDryRunWithAlertmanagerPlansOnly(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeDryRun, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "alertmanager", Weight: 1}}
	})
	body := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Crypto","namespace":%q,"pod":"shop-1","severity":"critical"}}]}`, ns)
	post(t, "/v1/alertmanager", "application/json", []byte(body), nil, http.StatusAccepted)
	post(t, "/v1/alertmanager", "application/json", []byte(body), nil, http.StatusAccepted) // re-planned, not listed twice
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		if len(p.Status.Plans) != 1 || p.Status.Plans[0].Pod != "shop-1" || p.Status.Plans[0].Score != "1" ||
			len(p.Status.Plans[0].Breakdown) != 1 || p.Status.Plans[0].Breakdown[0].Source != "alertmanager" || p.Status.Plans[0].BlockedBy != "" {
			return fmt.Errorf("plans %+v", p.Status.Plans)
		}
		return nil
	})
	podEvent(t, ns, "shop-1", "WouldQuarantine")
	never(t, ns)
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		if p.Status.ActiveQuarantines != 0 {
			return fmt.Errorf("dry run used budget: %d", p.Status.ActiveQuarantines)
		}
		return nil
	})
}

func podEvent(t *testing.T, ns, pod, reason string) {
	t.Helper()
	eventually(t, func() error {
		var evs eventsv1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Regarding.Kind == "Pod" && e.Regarding.Name == pod {
				return nil
			}
		}
		return fmt.Errorf("no %s event on pod %s among %d", reason, pod, len(evs.Items))
	})
}

func TestPauseSwitchMakesEnforcePlan(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: managerNS, Name: securityv1alpha1.ControlConfigMap},
		Data: map[string]string{securityv1alpha1.PausedKey: "true"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	// The switch is read from a watch: wait until the controller sees it,
	// both ways, or a busy machine races the signal past it.
	sees := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := decider.paused(ctx)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the controller never saw paused=%v (last %v, %v)", want, got, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sees(true)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := k8s.Delete(ctx, cm); err != nil {
				t.Error(err)
			}
			sees(false)
		}
	}
	defer resume()
	postFalco(t, ns, "shop-1", "Critical")
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		if len(p.Status.Plans) != 1 {
			return fmt.Errorf("plans %+v", p.Status.Plans)
		}
		return nil
	})
	never(t, ns)
	resume()
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
}

func TestSafeguardProtectedNamespace(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Safeguards.ProtectedNamespaces = []string{ns}
	})
	postFalco(t, ns, "shop-1", "Critical")
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		if len(p.Status.Plans) != 1 || p.Status.Plans[0].BlockedBy != policy.BlockedProtectedNamespace {
			return fmt.Errorf("plans %+v", p.Status.Plans)
		}
		return nil
	})
	never(t, ns)
}

func TestSafeguardBudget(t *testing.T) {
	ns := newNamespace(t, "shop-1", "shop-2")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Safeguards.MaxActiveQuarantines = 1
	})
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	postFalco(t, ns, "shop-2", "Critical")
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		ready := apimeta.FindStatusCondition(p.Status.Conditions, securityv1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != securityv1alpha1.ReasonBudgetExhausted {
			return fmt.Errorf("ready %+v", ready)
		}
		if len(p.Status.Plans) != 1 || p.Status.Plans[0].Pod != "shop-2" || p.Status.Plans[0].BlockedBy != policy.BlockedBudget {
			return fmt.Errorf("plans %+v", p.Status.Plans)
		}
		return nil
	})
	if qs := quarantines(t, ns); len(qs) != 1 || qs[0].Spec.Target.Name != "shop-1" {
		t.Errorf("quarantines %d", len(qs))
	}
}

func TestSafeguardCooldownAfterRelease(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Safeguards.Cooldown = &metav1.Duration{Duration: 10 * time.Minute}
	})
	postFalco(t, ns, "shop-1", "Critical")
	q := onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	// A human releases it; the Quarantine controller records when.
	ctx := context.Background()
	patch := client.MergeFrom(q.DeepCopy())
	released := true
	q.Spec.Released = &released
	if err := k8s.Patch(ctx, q, patch); err != nil {
		t.Fatal(err)
	}
	q.Status.Phase, q.Status.ReleasedAt = securityv1alpha1.PhaseReleased, &metav1.Time{Time: time.Now()}
	if err := k8s.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the cache see it
	postFalco(t, ns, "shop-1", "Critical")
	time.Sleep(1 * time.Second)
	if qs := quarantines(t, ns); len(qs) != 1 {
		t.Errorf("%d Quarantines: cooldown did not hold", len(qs))
	}
}

func TestTwoPoliciesOneQuarantine(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	a := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Hour}
	})
	b := newPolicy(t, ns, securityv1alpha1.ModeRequireApproval, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: time.Hour}
	})
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		want := []string{a.Name, b.Name}
		slices.Sort(want)
		if !slices.Equal(q.Spec.Reason.Policies, want) || q.IsApproved() || q.Spec.AutoReleaseAfter.Duration != time.Hour {
			return fmt.Errorf("spec %+v %+v", q.Spec, q.Spec.Reason)
		}
		return nil
	})
	for _, name := range []string{a.Name, b.Name} {
		policyStatus(t, name, func(p *securityv1alpha1.ThreatPolicy) error {
			if p.Status.ActiveQuarantines != 1 {
				return fmt.Errorf("%s active %d", name, p.Status.ActiveQuarantines)
			}
			return nil
		})
	}
}

func TestTetragonCloudEventsAndSyscallsContain(t *testing.T) {
	// The repository's copy of the public Tetragon sample: no ../shared needed.
	kprobe := detectiontest.Sample(t, "process_kprobe-1-file-access.json")
	t.Run("tetragon kprobe", func(t *testing.T) {
		ns := newNamespace(t, "file-access")
		newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
			s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "tetragon", Weight: 1}}
		})
		var ev map[string]any
		if err := json.Unmarshal(kprobe, &ev); err != nil {
			t.Fatal(err)
		}
		ev["process_kprobe"].(map[string]any)["process"].(map[string]any)["pod"].(map[string]any)["namespace"] = ns
		// The sample is from 2023: older than --score-ttl, so it would not count.
		ev["time"] = time.Now().UTC().Format(time.RFC3339Nano)
		line, _ := json.Marshal(ev)
		post(t, "/v1/tetragon", "application/x-ndjson", append(line, '\n'), nil, http.StatusAccepted)
		onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
			if q.Spec.Reason.Detector != "tetragon" || !strings.Contains(q.Spec.Reason.Summary, "file-monitoring") {
				return fmt.Errorf("reason %+v", q.Spec.Reason)
			}
			return nil
		})
	})
	t.Run("cloudevents binary falco", func(t *testing.T) {
		ns := newNamespace(t, "alpine")
		newPolicy(t, ns, securityv1alpha1.ModeEnforce)
		data := fmt.Sprintf(`{"rule":"Terminal shell in container","priority":"Critical","output":"x","output_fields":{"k8s.ns.name":%q,"k8s.pod.name":"alpine"}}`, ns)
		post(t, "/v1/cloudevents", "application/json", []byte(data), map[string]string{
			"Ce-Specversion": "1.0", "Ce-Type": "falco.rule.output.v1", "Ce-Source": "https://falco.org", "Ce-Id": ns}, http.StatusAccepted)
		onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
			if q.Spec.Reason.Detector != "falco" {
				return fmt.Errorf("reason %+v", q.Spec.Reason)
			}
			return nil
		})
	})
	t.Run("cloudevents structured score", func(t *testing.T) {
		ns := newNamespace(t, "shop-1")
		newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
			s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "other-model", Weight: 1}}
		})
		body := fmt.Sprintf(`{"specversion":"1.0","type":"dev.bulkhead.score.v1","source":"models","id":%q,"data":{"namespace":%q,"pod":"shop-1","detector":"other-model","score":0.9}}`, ns, ns)
		post(t, "/v1/cloudevents", "application/cloudevents+json", []byte(body), nil, http.StatusAccepted)
		onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	})
	t.Run("syscalls through the behavior model", func(t *testing.T) {
		ns := newNamespace(t, "shop-1")
		newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
			s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "behavior", Weight: 1}}
		})
		post(t, "/v1/syscalls", "application/json", fmt.Appendf(nil, `{"namespace":%q,"pod":"shop-1","calls":"open read write"}`, ns), nil, http.StatusAccepted)
		never(t, ns)
		post(t, "/v1/syscalls", "application/json", fmt.Appendf(nil, `{"namespace":%q,"pod":"shop-1","calls":"open ptrace mprotect"}`, ns), nil, http.StatusAccepted)
		onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
			if q.Spec.Reason.Detector != "behavior" {
				return fmt.Errorf("reason %+v", q.Spec.Reason)
			}
			return nil
		})
	})
}

func TestAutoReleaseOnlyWhenTheScoreFell(t *testing.T) {
	ns := newNamespace(t, "shop-1", "shop-2")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Second}
	})
	postFalco(t, ns, "shop-1", "Critical")
	postFalco(t, ns, "shop-2", "Critical")
	postFalco(t, ns, "shop-1", "Notice") // shop-1's score falls to 0.5
	byTarget := func(target string) *securityv1alpha1.Quarantine {
		for _, q := range quarantines(t, ns) {
			if q.Spec.Target.Name == target {
				return &q
			}
		}
		return nil
	}
	eventually(t, func() error {
		q := byTarget("shop-1")
		if q == nil || !q.IsReleased() || q.Annotations[securityv1alpha1.ActorAnnotation] != policy.AutoReleaseActor {
			return fmt.Errorf("shop-1 not auto-released: %+v", q)
		}
		return nil
	})
	eventually(t, func() error {
		q := byTarget("shop-2")
		if q == nil || q.IsReleased() || q.Annotations[policy.AutoReleaseAtAnnotation] == "" {
			return fmt.Errorf("shop-2 not extended: %+v", q)
		}
		return nil
	})
}

func TestQuarantineNameTruncatedAndSuffixed(t *testing.T) {
	ns := newNamespace(t)
	long := strings.Repeat("a", 60) + "-bcdefghij"
	newPod(t, ns, long)
	newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	// A hand-made, released Quarantine already holds the truncated name.
	released := true
	taken := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: strings.Repeat("a", 60) + "-bc"},
		Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "other"}, Released: &released,
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}}}}
	if err := k8s.Create(context.Background(), taken); err != nil {
		t.Fatal(err)
	}
	postFalco(t, ns, long, "Critical")
	eventually(t, func() error {
		for _, q := range quarantines(t, ns) {
			if q.Spec.Target.Name == long {
				if q.Name != strings.Repeat("a", 60)+"-2" {
					return fmt.Errorf("name %q", q.Name)
				}
				return nil
			}
		}
		return fmt.Errorf("no Quarantine for the pod")
	})
}

func TestNoSignalForUncoveredPod(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Selector.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "not-shop"}}
	})
	postFalco(t, ns, "shop-1", "Critical")
	never(t, ns)
}

func TestReadyNamesDetectorsNeverHeardFrom(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Detectors = []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 1}, {Name: "typo-model", Weight: 1}}
	})
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		ready := apimeta.FindStatusCondition(p.Status.Conditions, securityv1alpha1.ConditionReady)
		if ready == nil || !strings.Contains(ready.Message, "[typo-model]") {
			return fmt.Errorf("ready %+v", ready)
		}
		return nil
	})
}

func TestScoresExpireWithThePod(t *testing.T) {
	ns := newNamespace(t)
	pod := newPod(t, ns, "short-lived")
	postScore(t, ns, "short-lived", "my-model", 0.3)
	key := detection.PodKey{Namespace: ns, Pod: "short-lived"}
	if len(evaluator.Store.Fresh(key)) != 1 {
		t.Fatal("score not stored")
	}
	if err := k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if n := len(evaluator.Store.Fresh(key)); n != 0 {
			return fmt.Errorf("%d scores kept for a deleted pod", n)
		}
		return nil
	})
	// The pod is gone, so a new score for it is refused.
	b, _ := json.Marshal(map[string]any{"namespace": ns, "pod": "short-lived", "detector": "my-model", "score": 0.3})
	post(t, "/v1/scores", "application/json", b, nil, http.StatusUnprocessableEntity)
}

func TestInvalidSelectorStalls(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Selector.PodSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Resembles", Values: []string{"shop"}}}}
	})
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		ready := apimeta.FindStatusCondition(p.Status.Conditions, securityv1alpha1.ConditionReady)
		stalled := apimeta.FindStatusCondition(p.Status.Conditions, securityv1alpha1.ConditionStalled)
		if ready == nil || ready.Reason != securityv1alpha1.ReasonInvalidSpec || stalled == nil || stalled.Status != metav1.ConditionTrue || p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("conditions %+v", p.Status.Conditions)
		}
		return nil
	})
	postFalco(t, ns, "shop-1", "Critical")
	never(t, ns)
}

// TestClusterWideCap: Quarantines carrying the created-by annotation that
// the manager did not make (forged, as any user allowed to create
// Quarantines can when the admission guard is missing) count against
// nothing, and the pod is contained; once the same fillers carry the
// manager's signature, they fill --max-active-quarantines (100) and a new
// trigger is only planned.
func TestClusterWideCap(t *testing.T) {
	ctx := context.Background()
	var all securityv1alpha1.QuarantineList
	if err := k8s.List(ctx, &all); err != nil {
		t.Fatal(err)
	}
	signer, err := keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, q := range all.Items {
		if !q.IsReleased() && signer.Made(&q) {
			active++
		}
	}
	filler := newNamespace(t)
	var fillers []*securityv1alpha1.Quarantine
	defer func() {
		for _, q := range fillers {
			_ = k8s.Delete(ctx, q)
		}
	}()
	for i := active; i < 100; i++ {
		q := &securityv1alpha1.Quarantine{
			ObjectMeta: metav1.ObjectMeta{Namespace: filler, Name: fmt.Sprintf("f%d", i),
				Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "filler", provenance.Annotation: strings.Repeat("0", 64)}},
			Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: fmt.Sprintf("f%d", i)},
				Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
				Reason:  &securityv1alpha1.QuarantineReason{Policy: "filler", Policies: []string{"filler"}}},
		}
		if err := k8s.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, q)
	}
	forged := newNamespace(t, "shop-1")
	newPolicy(t, forged, securityv1alpha1.ModeEnforce)
	time.Sleep(500 * time.Millisecond) // the cache sees the fillers
	postFalco(t, forged, "shop-1", "Critical")
	onlyQuarantine(t, forged, func(q *securityv1alpha1.Quarantine) error {
		if q.Spec.Target.Name != "shop-1" {
			return fmt.Errorf("target %s", q.Spec.Target.Name)
		}
		return nil
	})

	// The same fillers signed by the manager's key: now they count (the
	// quarantine just made is one more, so one filler fewer is needed).
	for _, q := range fillers[1:] {
		base := q.DeepCopy()
		q.Annotations[provenance.Annotation] = signer.Sign(q)
		if err := k8s.Patch(ctx, q, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	ns := newNamespace(t, "shop-1")
	p := newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	time.Sleep(500 * time.Millisecond) // the cache sees the signatures
	postFalco(t, ns, "shop-1", "Critical")
	policyStatus(t, p.Name, func(p *securityv1alpha1.ThreatPolicy) error {
		if len(p.Status.Plans) != 1 || p.Status.Plans[0].BlockedBy != policy.BlockedClusterCap {
			return fmt.Errorf("plans %+v", p.Status.Plans)
		}
		return nil
	})
	never(t, ns)
}

// TestHandMadeQuarantineIsNoShield: a hand-made, Label-only Quarantine does
// not make its pod immune: the policy adds its actions to it (an Event says
// so) instead of stopping, and makes no second Quarantine.
func TestHandMadeQuarantineIsNoShield(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "shop-1")
	hand := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "by-hand"},
		Spec: securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-1"},
			Actions: []securityv1alpha1.Action{{Type: securityv1alpha1.ActionLabel, Label: &securityv1alpha1.LabelParams{Labels: map[string]string{"triage": "yes"}}}}},
	}
	if err := k8s.Create(ctx, hand); err != nil {
		t.Fatal(err)
	}
	newPolicy(t, ns, securityv1alpha1.ModeEnforce)
	eventually(t, func() error { // the cache sees the hand-made one
		return evaluator.Reader.Get(ctx, client.ObjectKeyFromObject(hand), &securityv1alpha1.Quarantine{})
	})
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(q *securityv1alpha1.Quarantine) error {
		if q.Name != "by-hand" || actionTypes(q) != "Label,Isolate,ScaleToZero,CordonNode" {
			return fmt.Errorf("%s: %s", q.Name, actionTypes(q))
		}
		if q.Spec.Reason != nil || q.Annotations[securityv1alpha1.CreatedByPolicyAnnotation] != "" {
			return fmt.Errorf("the author's fields were taken over: %+v %v", q.Spec.Reason, q.Annotations)
		}
		return nil
	})
}
