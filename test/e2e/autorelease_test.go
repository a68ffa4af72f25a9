//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/controller/podresponse"
	"github.com/bulkhead-dev/bulkhead/test/framework"
)

// Issue 15 item 3: a policy's ScaleToZero removes the pod, yet its
// autoReleaseAfter still fires (driven by the Quarantine, not the pod): with
// no pod left nothing can say the score fell, so the policy's
// releaseWithoutEvidenceAfter releases it, audited, and the Deployment gets
// its replicas back.
func TestAutoReleaseScalesBackAfterScaleToZero(t *testing.T) {
	s := newScenario(t)
	pods := s.deployShop(2, "")
	target := pods[0].Name
	name := "e2e-autorelease-" + s.ns[len(s.ns)-6:]
	yaml := framework.Policy{
		Name:                 name,
		NamespaceLabels:      map[string]string{scenarioLabel: s.ns},
		PodLabels:            map[string]string{"app": "shop"},
		Detectors:            []framework.Detector{{Name: externalDetector, Weight: 100}},
		Sustain:              2,
		Response:             []framework.Step{{MinScore: "0.80", Actions: "[{type: Isolate, isolate: {allowDNS: true}}, {type: ScaleToZero}]"}},
		MaxActiveQuarantines: 5,
		Cooldown:             "1m", // the restored pods are not contained again at once
	}.YAML() + "  release:\n    autoReleaseAfter: 4s\n    releaseWithoutEvidenceAfter: 6s\n"
	s.applyPolicy(name, yaml)
	s.waitPolicyReady(name)

	s.postScore(target, 0.95)
	s.postScore(target, 0.97)
	qname := s.waitQuarantineFor(target)
	s.eventually(30*time.Second, "owner scaled to zero", func(ctx context.Context) error {
		r, err := s.replicas(ctx)
		if err != nil || r != 0 {
			return fmt.Errorf("replicas %d %v", r, err)
		}
		return nil
	})
	s.eventually(60*time.Second, "auto-released without evidence, audited", func(ctx context.Context) error {
		q, err := s.quarantine(ctx, qname)
		if err != nil {
			return err
		}
		if !q.IsReleased() || q.Annotations[podresponse.AutoReleaseReasonAnnotation] != podresponse.ReasonReleasedWithoutEvidence {
			return fmt.Errorf("released %v, annotations %v", q.IsReleased(), q.Annotations)
		}
		return nil
	})
	s.waitPhase(qname, securityv1alpha1.PhaseReleased)
	s.eventually(30*time.Second, "Deployment scaled back to 2", func(ctx context.Context) error {
		r, err := s.replicas(ctx)
		if err != nil || r != 2 {
			return fmt.Errorf("replicas %d %v", r, err)
		}
		return nil
	})
	s.waitShopRunning(2, "")
	out := s.kubectl("", "get", "events", "-n", s.ns, "--field-selector", "reason=AutoReleased", "-o", "name")
	if strings.TrimSpace(out) == "" {
		t.Error("no AutoReleased Event")
	}
}
