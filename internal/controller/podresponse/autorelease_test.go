package podresponse

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func quarantineOf(t *testing.T, ns, target string) *securityv1alpha1.Quarantine {
	t.Helper()
	for _, q := range quarantines(t, ns) {
		if q.Spec.Target.Name == target {
			return &q
		}
	}
	return nil
}

// Issue 14 item 11: after a manager failover the scores (in memory) are
// gone; "no fresh score" is not evidence that the score fell, so the
// Quarantine is extended, not released.
func TestAutoReleaseNeedsEvidenceAfterFailover(t *testing.T) {
	ns := newNamespace(t, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Second}
	})
	postFalco(t, ns, "shop-1", "Critical")
	onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	// What a new leader knows about the pod: nothing.
	evaluator.Store.Forget(detection.PodKey{Namespace: ns, Pod: "shop-1"})
	eventually(t, func() error {
		q := quarantineOf(t, ns, "shop-1")
		if q == nil || q.Annotations[policy.AutoReleaseAtAnnotation] == "" {
			return fmt.Errorf("not extended yet: %+v", q)
		}
		return nil
	})
	if q := quarantineOf(t, ns, "shop-1"); q.IsReleased() {
		t.Fatalf("auto-released without a fresh score: %+v", q.Annotations)
	}
}

// ownedPod makes a pod controlled by StatefulSet/db (envtest runs no
// controllers: nothing acts on the reference).
func ownedPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	ctrlRef := true
	return createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "shop"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "00000000-0000-0000-0000-000000000001", Controller: &ctrlRef}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}})
}

// containThenRemove contains ns/shop-1, records its workload as the
// Quarantine controller does, and deletes the pod as ScaleToZero/Evict would.
func containThenRemove(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	postFalco(t, ns, "shop-1", "Critical")
	q := onlyQuarantine(t, ns, func(*securityv1alpha1.Quarantine) error { return nil })
	q.Status.Target = &securityv1alpha1.ResolvedTarget{Owner: "StatefulSet/db"}
	q.Status.Phase = securityv1alpha1.PhaseContained
	if err := k8s.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-1"}}
	if err := k8s.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
}

func releasedBecause(t *testing.T, ns, reason string) {
	t.Helper()
	eventually(t, func() error {
		q := quarantineOf(t, ns, "shop-1")
		if q == nil || !q.IsReleased() || q.Annotations[securityv1alpha1.ActorAnnotation] != policy.AutoReleaseActor ||
			q.Annotations[AutoReleaseReasonAnnotation] != reason {
			return fmt.Errorf("not auto-released because %s: %+v", reason, q)
		}
		return nil
	})
}

// Issue 15 item 3: once the pod is gone, auto-release is driven by the
// Quarantine; nothing can be said about a workload with no pod left, so
// the policy's fallback decides, audited.
func TestAutoReleaseOfGonePodByFallback(t *testing.T) {
	ns := newNamespace(t)
	ownedPod(t, ns, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Second}
		s.Release.ReleaseWithoutEvidenceAfter = &metav1.Duration{Duration: 3 * time.Second}
	})
	containThenRemove(t, ns)
	releasedBecause(t, ns, ReasonReleasedWithoutEvidence)
}

// Issue 15 item 3: a gone pod's workload still has a pod; the detectors
// say it scores below the threshold, which is evidence the score fell.
func TestAutoReleaseOfGonePodJudgesItsWorkload(t *testing.T) {
	ns := newNamespace(t)
	ownedPod(t, ns, "shop-1")
	ownedPod(t, ns, "shop-2")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Second}
	})
	containThenRemove(t, ns)
	postFalco(t, ns, "shop-2", "Notice")
	releasedBecause(t, ns, string(policy.VerdictFell))
}

// Without a fallback, a gone pod whose workload nobody scores is held and
// the extension says why.
func TestAutoReleaseOfGonePodHeldWithoutEvidence(t *testing.T) {
	ns := newNamespace(t)
	ownedPod(t, ns, "shop-1")
	newPolicy(t, ns, securityv1alpha1.ModeEnforce, func(s *securityv1alpha1.ThreatPolicySpec) {
		s.Release.AutoReleaseAfter = &metav1.Duration{Duration: 2 * time.Second}
	})
	containThenRemove(t, ns)
	eventually(t, func() error {
		q := quarantineOf(t, ns, "shop-1")
		if q == nil || q.Annotations[policy.AutoReleaseAtAnnotation] == "" {
			return fmt.Errorf("not extended: %+v", q)
		}
		return nil
	})
	if q := quarantineOf(t, ns, "shop-1"); q.IsReleased() {
		t.Fatal("released without evidence or fallback")
	}
}
