package quarantine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

// TestForbiddenIsRetried: a tenant who fills the NetworkPolicy quota makes
// the API server answer Forbidden. That must not mark Isolate Failed for
// good: the pass errors (the queue backs off), an alert is raised, and once
// the quota is gone Isolate is applied.
func TestForbiddenIsRetried(t *testing.T) {
	f := newFixture(t, 1)
	// A webhook-style denial (a ValidatingAdmissionPolicy answers 403).
	deny := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-netpol-" + f.ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: new(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"networkpolicies"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "object.metadata.namespace != '" + f.ns + "'", Message: "NetworkPolicies are not allowed here", Reason: new(metav1.StatusReasonForbidden)}},
		},
	}
	must(t, direct.Create(ctx, deny))
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: deny.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: deny.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
	}
	must(t, direct.Create(ctx, binding))
	t.Cleanup(func() { _ = direct.Delete(ctx, binding); _ = direct.Delete(ctx, deny) })
	// The policy takes effect a moment after it is created.
	probe := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: f.ns}}
	for i := 0; ; i++ {
		err := direct.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if apierrors.IsForbidden(err) {
			break
		}
		if i > 100 {
			t.Fatalf("the denying policy never took effect: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r, rec := newReconciler(direct)
	alerts := testutil.ToFloat64(metrics.ActionForbidden.WithLabelValues("Isolate"))
	key := f.quarantine(t, "q", f.pods[0].Name, isolateDNS())
	var lastErr error
	for range 6 {
		_, lastErr = r.Reconcile(ctx, reqFor(key))
	}
	if lastErr == nil || !apierrors.IsForbidden(lastErr) {
		t.Logf("status %+v", getQ(t, key).Status)
		t.Fatalf("a Forbidden apply must fail the pass so it is retried with backoff, got %v", lastErr)
	}
	q := getQ(t, key)
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State == securityv1alpha1.ActionFailed {
		t.Fatalf("Forbidden marked Isolate Failed for good: %+v", st)
	}
	if testutil.ToFloat64(metrics.ActionForbidden.WithLabelValues("Isolate")) <= alerts {
		t.Fatal("no alert metric for the Forbidden apply")
	}
	if rec.count("Quarantine", "ActionForbidden") == 0 {
		t.Fatal("no ActionForbidden event")
	}
	must(t, direct.Delete(ctx, binding))
	must(t, direct.Delete(ctx, deny))
	time.Sleep(time.Second) // the policy's removal takes effect
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate not applied once the quota was gone: %+v", st)
	}
}

// TestCraftedPodIsContained: a pod built to overflow the evidence limits
// (more than 128 labels, more than 64 containers, an image string over
// 1 KiB, over 1 MiB of args) is still contained, with evidence trimmed to fit.
func TestCraftedPodIsContained(t *testing.T) {
	f := newFixture(t, 0)
	labels := map[string]string{}
	for i := range 140 {
		labels[fmt.Sprintf("l%03d", i)] = "v"
	}
	longImage := "registry.example.com/" + strings.Repeat("a", 1100) + ":1"
	big := strings.Repeat("x", 100<<10)
	containers := make([]corev1.Container, 0, 70)
	for i := range 70 {
		c := corev1.Container{Name: fmt.Sprintf("c%d", i), Image: "nginx:1.27"}
		if i == 0 {
			c.Image = longImage
		}
		if i < 11 {
			c.Args = []string{big}
		}
		containers = append(containers, c)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crafted", Namespace: f.ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: f.node, Containers: containers},
	}
	must(t, direct.Create(ctx, pod))
	r, rec := newReconciler(direct)
	key := f.quarantine(t, "q", pod.Name, isolateDNS())
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied {
		t.Fatalf("Isolate: %+v", st)
	}
	ev := q.Status.Evidence
	if ev == nil || len(ev.Labels) > 128 || len(ev.Images) > 64 || len(ev.Images) == 0 || len(ev.Images[0].Image) > 1024 {
		t.Fatalf("evidence not trimmed to the API limits: %+v", ev)
	}
	if ev.SecretRef == "" {
		t.Fatalf("evidence of over 1 MiB must spill, trimmed, to a Secret: %+v", ev)
	}
	sec := &corev1.Secret{}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: r.ManagerNamespace, Name: ev.SecretRef}, sec))
	if n := len(sec.Data["evidence.json"]); n == 0 || n > 1<<20 {
		t.Fatalf("evidence Secret holds %d bytes", n)
	}
	if rec.count("Quarantine", "Contained") == 0 {
		t.Fatal("no Contained event")
	}
}

// TestEvidenceFailureDoesNotBlock: when the evidence cannot be stored (the
// Secret write is refused) the failure is recorded and containment goes on.
func TestEvidenceFailureDoesNotBlock(t *testing.T) {
	f := newFixture(t, 1)
	c := interceptor.NewClient(direct, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if b, _ := json.Marshal(obj); strings.Contains(string(b), `"kind":"Secret"`) {
				return apierrors.NewForbidden(corev1.Resource("secrets"), "x", errors.New("no"))
			}
			return c.Apply(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewForbidden(corev1.Resource("secrets"), obj.GetName(), errors.New("no"))
			}
			return c.Patch(ctx, obj, p, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewForbidden(corev1.Resource("secrets"), obj.GetName(), errors.New("no"))
			}
			return c.Create(ctx, obj, opts...)
		},
	})
	// Args large enough that the evidence spills to a Secret.
	bigPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: f.ns},
		Spec: corev1.PodSpec{NodeName: f.node, Containers: []corev1.Container{{Name: "c", Image: "nginx", Args: []string{strings.Repeat("y", 64<<10)}}}}}
	must(t, direct.Create(ctx, bigPod))
	r, _ := newReconciler(c)
	key := f.quarantine(t, "q", bigPod.Name, isolateDNS())
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	if !slices.ContainsFunc(q.Status.Audit, func(a securityv1alpha1.AuditEntry) bool { return a.Event == "EvidenceFailed" }) {
		t.Fatalf("the failed capture is not in the audit: %+v", q.Status.Audit)
	}
}

// TestAdmissionGuardMissing: without the admission guard, hand-made
// ScaleToZero, CordonNode, Evict and Detach are Refused (condition, metric,
// Event); the same actions on a Quarantine the manager made and signed
// still apply; and a forged created-by annotation without the signature is
// refused like any hand-made one.
func TestAdmissionGuardMissing(t *testing.T) {
	must(t, direct.Delete(ctx, guardBinding()))
	t.Cleanup(func() { must(t, direct.Create(ctx, guardBinding())) })
	f := newFixture(t, 2)
	r, rec := newReconciler(direct)
	refused := testutil.ToFloat64(metrics.AdmissionGuardMissing.WithLabelValues("ScaleToZero"))

	hand := f.quarantine(t, "hand", f.pods[0].Name, isolateDNS(), act(securityv1alpha1.ActionScaleToZero), act(securityv1alpha1.ActionCordonNode),
		act(securityv1alpha1.ActionEvict), act(securityv1alpha1.ActionDetach))
	q := drive(t, r, hand, phaseIs(securityv1alpha1.PhaseContained))
	for _, at := range []securityv1alpha1.ActionType{securityv1alpha1.ActionScaleToZero, securityv1alpha1.ActionCordonNode, securityv1alpha1.ActionEvict, securityv1alpha1.ActionDetach} {
		if st := actionState(q, at); st.State != securityv1alpha1.ActionRefused || !strings.HasPrefix(st.Message, ReasonAdmissionGuardMissing) {
			t.Errorf("hand-made %s without the guard: %+v", at, st)
		}
	}
	if st := actionState(q, securityv1alpha1.ActionIsolate); st.State != securityv1alpha1.ActionApplied {
		t.Errorf("Isolate is not destructive and must apply: %+v", st)
	}
	if c := apimeta.FindStatusCondition(q.Status.Conditions, ConditionAdmissionGuarded); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonAdmissionGuardMissing {
		t.Errorf("condition: %+v", c)
	}
	if testutil.ToFloat64(metrics.AdmissionGuardMissing.WithLabelValues("ScaleToZero")) != refused+1 || rec.count("Quarantine", ReasonAdmissionGuardMissing) != 4 {
		t.Error("no metric or Event for the refusals")
	}
	dep := &appsv1.Deployment{}
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(f.dep), dep))
	if *dep.Spec.Replicas != 2 {
		t.Fatalf("a hand-made ScaleToZero applied without the guard: %d replicas", *dep.Spec.Replicas)
	}
	release(t, hand)
	drive(t, r, hand, released)

	// Forged: the annotation without the manager's signature.
	forged := policyQuarantine(t, f, "forged", f.pods[1].Name, "", act(securityv1alpha1.ActionScaleToZero))
	q = drive(t, r, forged, phaseIs(securityv1alpha1.PhaseFailed))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); st.State != securityv1alpha1.ActionRefused {
		t.Fatalf("forged policy Quarantine: %+v", st)
	}
	release(t, forged)
	drive(t, r, forged, released)

	// Signed by the manager: a policy's ScaleToZero still works.
	signed := policyQuarantine(t, f, "signed", f.pods[1].Name, "sign", act(securityv1alpha1.ActionScaleToZero))
	q = drive(t, r, signed, phaseIs(securityv1alpha1.PhaseContained))
	if st := actionState(q, securityv1alpha1.ActionScaleToZero); st.State != securityv1alpha1.ActionApplied {
		t.Fatalf("a policy's ScaleToZero without the guard: %+v", st)
	}
}

// policyQuarantine creates a Quarantine with the created-by annotation,
// signed with the suite's key when sign is set.
func policyQuarantine(t *testing.T, f *fixture, name, pod, sign string, actions ...securityv1alpha1.Action) client.ObjectKey {
	t.Helper()
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "p"}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:  securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: pod},
			Actions: actions,
			Reason:  &securityv1alpha1.QuarantineReason{Policy: "p", Policies: []string{"p"}, Detector: "falco", Score: "0.97"},
		},
	}
	if sign != "" {
		q.Annotations[provenance.Annotation] = testSigner.Sign(q)
	}
	must(t, direct.Create(ctx, q))
	return client.ObjectKeyFromObject(q)
}
