package quarantine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/containment"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
)

func TestProtectedNamespace(t *testing.T) {
	r, _ := newReconciler(direct)
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Spec:       securityv1alpha1.QuarantineSpec{Target: securityv1alpha1.Target{Name: "coredns-x"}, Actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)}},
	}
	must(t, direct.Create(ctx, q))
	q = drive(t, r, client.ObjectKeyFromObject(q), phaseIs(securityv1alpha1.PhaseFailed))
	if readyReason(q) != securityv1alpha1.ReasonProtectedNamespace || len(q.Status.Actions) != 0 {
		t.Fatalf("reason %s actions %+v", readyReason(q), q.Status.Actions)
	}
}

func TestSecondQuarantineForSamePodFails(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	a := f.quarantine(t, "first", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
	b := f.quarantine(t, "second", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	// The younger one fails even when it is reconciled first.
	qb := drive(t, r, b, phaseIs(securityv1alpha1.PhaseFailed))
	if readyReason(qb) != securityv1alpha1.ReasonTargetAlreadyQuarantined {
		t.Fatalf("reason %s", readyReason(qb))
	}
	drive(t, r, a, phaseIs(securityv1alpha1.PhaseContained))
}

func TestUnapprovedStaysPendingWithEvidenceThenContains(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "qp", Namespace: f.ns, Labels: map[string]string{securityv1alpha1.PolicyLabel: "web-tier"}, Annotations: map[string]string{securityv1alpha1.CreatedByPolicyAnnotation: "web-tier"}},
		Spec: securityv1alpha1.QuarantineSpec{
			Target: securityv1alpha1.Target{Name: f.pods[0].Name}, Approved: new(false),
			Actions: []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)},
		},
	}
	must(t, direct.Create(ctx, q))
	key := client.ObjectKeyFromObject(q)
	q = drive(t, r, key, func(q *securityv1alpha1.Quarantine) bool { return q.Status.Evidence != nil })
	if q.Status.Phase != securityv1alpha1.PhasePending || readyReason(q) != securityv1alpha1.ReasonAwaitingApproval || len(q.Status.Actions) != 0 {
		t.Fatalf("phase %s reason %s actions %v", q.Status.Phase, readyReason(q), q.Status.Actions)
	}
	if _, ok := getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatal("applied while unapproved")
	}
	ev := q.Status.Evidence
	if len(ev.Images) != 1 || !strings.Contains(ev.Images[0].ImageID, "sha256:") || ev.Node != f.node || !slices.Equal(ev.OwnerChain, []string{"ReplicaSet/shop-7f9c", "Deployment/shop"}) {
		t.Fatalf("evidence %+v", ev)
	}
	spec := string(ev.PodSpec.Raw)
	if strings.Contains(spec, "s3cret") || strings.Contains(spec, "hunter2") || !strings.Contains(spec, evidence.Redacted) {
		t.Fatalf("secrets not redacted: %s", spec)
	}
	base := q.DeepCopy()
	q.Spec.Approved = new(true)
	must(t, direct.Patch(ctx, q, client.MergeFrom(base)))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
}

func TestLargeEvidenceSpillsToSecret(t *testing.T) {
	f := newFixture(t, 0)
	r, _ := newReconciler(direct)
	big := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "huge", Namespace: f.ns},
		Spec: corev1.PodSpec{NodeName: f.node, Containers: []corev1.Container{{
			Name: "c", Image: "busybox", Command: slices.Repeat([]string{strings.Repeat("a", 1000)}, 2*evidence.MaxInStatus/1000),
		}}},
	}
	must(t, direct.Create(ctx, big))
	key := f.quarantine(t, "qhuge", big.Name, act(securityv1alpha1.ActionIsolate))
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	ev := q.Status.Evidence
	if ev.SecretRef != evidence.SecretName(q) || ev.PodSpec != nil || ev.SizeBytes <= evidence.MaxInStatus {
		t.Fatalf("evidence not spilled: ref %q size %d", ev.SecretRef, ev.SizeBytes)
	}
	sec := &corev1.Secret{}
	must(t, direct.Get(ctx, client.ObjectKey{Namespace: r.ManagerNamespace, Name: ev.SecretRef}, sec))
	sum := sha256.Sum256(sec.Data["evidence.json"])
	if hex.EncodeToString(sum[:]) != ev.SHA256 || sec.Annotations[evidence.QuarantineUIDAnnotation] != string(q.UID) {
		t.Fatal("secret digest or Quarantine does not match status")
	}
}

func TestDeleteReleasesAndOnPhaseChange(t *testing.T) {
	f := newFixture(t, 1)
	before := f.snapshot(t)
	r, _ := newReconciler(direct)
	var (
		mu          sync.Mutex
		transitions []string
	)
	r.OnPhaseChange = func(_ context.Context, _ *securityv1alpha1.Quarantine, from, to securityv1alpha1.QuarantinePhase) {
		mu.Lock()
		defer mu.Unlock()
		transitions = append(transitions, string(from)+">"+string(to))
	}
	key := f.quarantine(t, "qdel", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionCordonNode))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	must(t, direct.Delete(ctx, getQ(t, key)))
	drive(t, r, key, func(q *securityv1alpha1.Quarantine) bool { return q == nil })
	if after := f.snapshot(t); after != before {
		t.Fatalf("not as before:\nbefore %s\nafter %s", before, after)
	}
	// Containment and release each finish in one pass here, so neither
	// Containing (no status write ahead of the isolating ones) nor
	// Releasing is ever patched alone.
	want := []string{">Contained", "Contained>Released"}
	if strings.Join(transitions, " ") != strings.Join(want, " ") {
		t.Fatalf("transitions %v, want %v", transitions, want)
	}
}

func TestReleasedQuarantineDeletedAfterRetention(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	r.ReleasedRetention = time.Hour
	key := f.quarantine(t, "qret", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	release(t, key)
	drive(t, r, key, released)
	res, err := r.Reconcile(ctx, reqFor(key))
	if err != nil || res.RequeueAfter <= 0 || getQ(t, key) == nil {
		t.Fatalf("kept until retention ends: res %+v err %v", res, err)
	}
	r.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	drive(t, r, key, func(q *securityv1alpha1.Quarantine) bool { return q == nil })
}

func TestJanitorRemovesLeftovers(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	key := f.quarantine(t, "qleft", f.pods[0].Name, act(securityv1alpha1.ActionIsolate), act(securityv1alpha1.ActionCordonNode))
	drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	// Someone strips the finalizer and deletes it while the manager is down.
	q := getQ(t, key)
	base := q.DeepCopy()
	q.Finalizers = nil
	must(t, direct.Patch(ctx, q, client.MergeFrom(base)))
	must(t, direct.Delete(ctx, q))
	if n := node(t, f.node); !tainted(n) {
		t.Fatal("precondition: node tainted")
	}
	j := &Janitor{Reconciler: r, Interval: time.Minute}
	must(t, j.RunOnce(ctx))
	n := node(t, f.node)
	if tainted(n) || n.Spec.Unschedulable || n.Annotations[containment.HoldersAnnotation] != "" {
		t.Fatalf("leftover cordon: %+v %v", n.Spec, n.Annotations)
	}
	snap := f.snapshot(t)
	if strings.Contains(snap, "AdminNetworkPolicy") || strings.Contains(snap, "GlobalNetworkPolicy") || strings.Contains(snap, "ClusterNetworkPolicy") {
		t.Fatalf("cluster-scoped deny policies left: %s", snap)
	}
}

func TestUnapprovedExpiresAfterApprovalTimeout(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	q := &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "qexp", Namespace: f.ns},
		Spec: securityv1alpha1.QuarantineSpec{
			Target: securityv1alpha1.Target{Name: f.pods[0].Name}, Approved: new(false),
			ApprovalTimeout: &metav1.Duration{Duration: 30 * time.Minute},
			Actions:         []securityv1alpha1.Action{act(securityv1alpha1.ActionIsolate)},
		},
	}
	must(t, direct.Create(ctx, q))
	key := client.ObjectKeyFromObject(q)
	drive(t, r, key, phaseIs(securityv1alpha1.PhasePending))
	res, err := r.Reconcile(ctx, reqFor(key))
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > 30*time.Minute {
		t.Fatalf("want a requeue at the deadline: %+v %v", res, err)
	}
	r.Now = func() time.Time { return time.Now().Add(time.Hour) }
	q = drive(t, r, key, released)
	if readyReason(q) != "ApprovalExpired" || len(q.Status.Actions) != 0 {
		t.Fatalf("reason %s actions %v", readyReason(q), q.Status.Actions)
	}
	if _, ok := getPod(t, f.pods[0]).Labels[securityv1alpha1.QuarantineLabel]; ok {
		t.Fatal("applied although never approved")
	}
}
