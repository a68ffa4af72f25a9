//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// An Enforce policy contains the pod whose score crosses the threshold,
// end to end from HTTP signals, only once the score is sustained, and
// leaves its sibling alone.
func TestEnforceContainsFromHTTPSignal(t *testing.T) {
	s := newScenario(t)
	pods := s.deployShop(2, "")
	target, sibling := pods[0].Name, pods[1].Name
	policy := "e2e-enforce-" + s.ns[len(s.ns)-6:]
	s.applyPolicy(policy, s.policyYAML(policy, securityv1alpha1.ModeEnforce))
	s.waitPolicyReady(policy)

	body := fmt.Sprintf(`{"namespace":%q,"pod":%q,"detector":%q,"score":0.99,"id":"forged"}`, s.ns, target, externalDetector)
	if code, resp, err := env.manager.Ingest.WithToken("not-the-token").Post(env.ctx, "/v1/scores", []byte(body)); code != http.StatusUnauthorized {
		t.Fatalf("POST /v1/scores with a wrong token: %d %s %v, want 401", code, resp, err)
	}
	s.postScore(target, 0.95)
	s.consistently(2*time.Second, "one signal is not sustained (and the forged one was dropped): no Quarantine yet", func(ctx context.Context) error {
		if q, err := s.quarantineFor(ctx, target); err == nil {
			return fmt.Errorf("Quarantine %s created after a single signal (sustain: 2)", q.Name)
		}
		return nil
	})
	s.postScore(target, 0.97)
	qname := s.waitQuarantineFor(target)
	q := s.waitPhase(qname, securityv1alpha1.PhaseContained)
	if q.Spec.Reason == nil || q.Spec.Reason.Policy != policy {
		t.Fatalf("Quarantine reason %+v, want policy %s", q.Spec.Reason, policy)
	}
	if q.Labels[securityv1alpha1.ManagedByLabel] != securityv1alpha1.ManagedByValue {
		t.Errorf("Quarantine lacks %s=%s: %v", securityv1alpha1.ManagedByLabel, securityv1alpha1.ManagedByValue, q.Labels)
	}
	requireActionApplied(t, q, securityv1alpha1.ActionIsolate)
	s.eventually(10*time.Second, "pod labelled and NetworkPolicy denying all but DNS", func(ctx context.Context) error {
		return s.checkIsolated(ctx, target, qname)
	})
	var p corev1.Pod
	if err := s.c.Get(env.ctx, client.ObjectKey{Namespace: s.ns, Name: sibling}, &p); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatalf("sibling pod %s was labelled too", sibling)
	}

	s.kubectl("", "patch", "quarantine", qname, "-n", s.ns, "--type=merge", "-p", `{"spec":{"released":true}}`)
	s.waitPhase(qname, securityv1alpha1.PhaseReleased)
	s.eventually(10*time.Second, "label and NetworkPolicy removed", func(ctx context.Context) error {
		return s.checkNotIsolated(ctx, target)
	})
}

// RequireApproval: the Quarantine waits, unapproved, and nothing is done to
// the pod until a human sets approved: true.
func TestRequireApprovalWaitsForHuman(t *testing.T) {
	s := newScenario(t)
	pods := s.deployShop(1, "")
	target := pods[0].Name
	policy := "e2e-approval-" + s.ns[len(s.ns)-6:]
	s.applyPolicy(policy, s.policyYAML(policy, securityv1alpha1.ModeRequireApproval))
	s.waitPolicyReady(policy)

	s.postScore(target, 0.9)
	s.postScore(target, 0.9)
	var qname string
	s.eventually(30*time.Second, "unapproved Quarantine for "+target, func(ctx context.Context) error {
		q, err := s.quarantineFor(ctx, target)
		if err != nil {
			return err
		}
		if q.IsApproved() {
			return fmt.Errorf("Quarantine %s is approved", q.Name)
		}
		qname = q.Name
		return nil
	})
	s.consistently(3*time.Second, "nothing applied while unapproved", func(ctx context.Context) error {
		q, err := s.quarantine(ctx, qname)
		if err != nil {
			return err
		}
		for _, a := range q.Status.Actions {
			if a.State == securityv1alpha1.ActionApplied {
				return fmt.Errorf("action %s applied before approval", a.Type)
			}
		}
		if q.Status.Phase == securityv1alpha1.PhaseContained || q.Status.Phase == securityv1alpha1.PhaseContaining {
			return fmt.Errorf("phase %s before approval", q.Status.Phase)
		}
		return s.checkNotIsolated(ctx, target)
	})
	q, err := s.quarantine(env.ctx, qname)
	if err != nil {
		t.Fatal(err)
	}
	if q.Status.Evidence == nil {
		t.Errorf("evidence not captured while unapproved")
	}

	s.kubectl("", "patch", "quarantine", qname, "-n", s.ns, "--type=merge", "-p", `{"spec":{"approved":true}}`)
	s.waitPhase(qname, securityv1alpha1.PhaseContained)
	s.eventually(10*time.Second, "pod isolated after approval", func(ctx context.Context) error {
		return s.checkIsolated(ctx, target, qname)
	})
}

// DryRun: the plan shows in the policy's status and as a WouldQuarantine
// Event on the pod, and nothing changes.
func TestDryRunPlansOnly(t *testing.T) {
	s := newScenario(t)
	pods := s.deployShop(1, "")
	target := pods[0].Name
	policy := "e2e-dryrun-" + s.ns[len(s.ns)-6:]
	s.applyPolicy(policy, s.policyYAML(policy, securityv1alpha1.ModeDryRun))
	s.waitPolicyReady(policy)

	s.postScore(target, 0.92)
	s.postScore(target, 0.92)
	s.eventually(30*time.Second, "plan for "+target+" in status.plans", func(ctx context.Context) error {
		var tp securityv1alpha1.ThreatPolicy
		if err := s.c.Get(ctx, client.ObjectKey{Name: policy}, &tp); err != nil {
			return err
		}
		for _, p := range tp.Status.Plans {
			if p.Namespace == s.ns && p.Pod == target {
				if len(p.Actions) == 0 || p.Actions[0] != securityv1alpha1.ActionIsolate {
					return fmt.Errorf("plan actions %v, want [Isolate]", p.Actions)
				}
				return nil
			}
		}
		return fmt.Errorf("%d plans, none for the pod", len(tp.Status.Plans))
	})
	s.eventually(15*time.Second, "WouldQuarantine Event on the pod", func(ctx context.Context) error {
		var evs corev1.EventList
		if err := s.c.List(ctx, &evs, client.InNamespace(s.ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "WouldQuarantine" && e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == target {
				return nil
			}
		}
		return fmt.Errorf("%d events, no WouldQuarantine", len(evs.Items))
	})
	s.consistently(2*time.Second, "no Quarantine, label or NetworkPolicy", func(ctx context.Context) error {
		var list securityv1alpha1.QuarantineList
		if err := s.c.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			return err
		}
		if len(list.Items) != 0 {
			return fmt.Errorf("DryRun created Quarantine %s", list.Items[0].Name)
		}
		return s.checkNotIsolated(ctx, target)
	})
}

// A ThreatPolicy kept in Git and applied server-side by a GitOps tool's
// field manager: re-applying it (by the same manager, and by a second one)
// gives no conflict, and the controller never takes ownership of or changes
// its spec, so there is no drift.
func TestThreatPolicyServerSideApplyNoDrift(t *testing.T) {
	s := newScenario(t)
	policy := "e2e-gitops-" + s.ns[len(s.ns)-6:]
	yaml := s.policyYAML(policy, securityv1alpha1.ModeEnforce)
	for _, fm := range []string{"argocd-controller", "kustomize-controller"} {
		s.kubectl(yaml, "apply", "--server-side", "--field-manager="+fm, "-f", "-")
	}
	s.deletePolicyAtEnd(policy)
	first := s.waitPolicyReady(policy)

	// Give the controller time for more passes (status updates, requeues).
	time.Sleep(3 * time.Second)
	for _, fm := range []string{"argocd-controller", "kustomize-controller"} {
		s.kubectl(yaml, "apply", "--server-side", "--field-manager="+fm, "-f", "-")
		out, err := env.cluster.Kubectl(env.ctx, strings.NewReader(yaml), "diff", "--server-side", "--field-manager="+fm, "-f", "-")
		if err != nil {
			t.Fatalf("kubectl diff as %s reports drift: %v\n%s", fm, err, out)
		}
	}
	var tp securityv1alpha1.ThreatPolicy
	if err := s.c.Get(env.ctx, client.ObjectKey{Name: policy}, &tp); err != nil {
		t.Fatal(err)
	}
	if tp.Generation != first.Generation {
		t.Fatalf("generation moved from %d to %d: someone wrote the spec", first.Generation, tp.Generation)
	}
	for _, mf := range tp.ManagedFields {
		if mf.Subresource == "status" {
			continue
		}
		if mf.Manager != "argocd-controller" && mf.Manager != "kustomize-controller" {
			t.Errorf("field manager %q (%s) owns main-resource fields of the policy: %s", mf.Manager, mf.Operation, mf.FieldsV1)
		}
	}
	if tp.Status.ObservedGeneration != tp.Generation {
		t.Errorf("status.observedGeneration %d, generation %d", tp.Status.ObservedGeneration, tp.Generation)
	}
}

// waitPolicyReady waits until the controller has observed the policy's
// generation and set Ready=True.
func (s *scenario) waitPolicyReady(name string) *securityv1alpha1.ThreatPolicy {
	s.t.Helper()
	var tp securityv1alpha1.ThreatPolicy
	s.eventually(30*time.Second, "ThreatPolicy "+name+" Ready", func(ctx context.Context) error {
		if err := s.c.Get(ctx, types.NamespacedName{Name: name}, &tp); err != nil {
			return err
		}
		if tp.Status.ObservedGeneration != tp.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", tp.Status.ObservedGeneration, tp.Generation)
		}
		for _, c := range tp.Status.Conditions {
			if c.Type == securityv1alpha1.ConditionReady {
				if c.Status != "True" {
					return fmt.Errorf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("no Ready condition")
	})
	return &tp
}
