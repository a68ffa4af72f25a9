package quarantine

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

// TestEvidenceOutlivesQuarantine: evidence held only the pod spec and the
// top score, in a Secret owned by the Quarantine in the tenant's namespace,
// so it died with the Quarantine. Now it holds container statuses, the
// pod's Events, each container's log (or why there is none: envtest, like
// kwok, has no kubelet), every detector's score and evidence and the fused
// breakdown; it is kept in the manager namespace after the Quarantine is
// deleted, until the retention ends.
func TestEvidenceOutlivesQuarantine(t *testing.T) {
	f := newFixture(t, 1)
	pod := f.pods[0]
	must(t, direct.Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "backoff", Namespace: f.ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: f.ns, Name: pod.Name, UID: pod.UID},
		Type:           corev1.EventTypeWarning, Reason: "BackOff", Message: "Back-off restarting failed container", LastTimestamp: metav1.Now(),
	}))
	kube, err := kubernetes.NewForConfig(env.Config)
	must(t, err)
	tp := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: "shop-policy"}, Spec: securityv1alpha1.ThreatPolicySpec{
		Detectors: []securityv1alpha1.DetectorWeight{{Name: "falco", Weight: 50}, {Name: "fraud-model", Weight: 50}}}}
	policies := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(tp).Build()
	r, _ := newReconciler(direct)
	r.Evidence = &evidence.Sources{
		Scores: func(ns, name string) map[string]detector.Entry {
			if ns != f.ns || name != pod.Name {
				return nil
			}
			return map[string]detector.Entry{
				"falco":       {Score: 0.95, Reason: "Terminal shell in container", Evidence: []byte(`{"output":"sh -c mysql -pTopSecret","rule":"Terminal shell in container"}`), Time: time.Now()},
				"fraud-model": {Score: 0.7, Reason: "odd orders", Evidence: []byte(`{"orders":12}`), Time: time.Now()},
			}
		},
		Policies: policies, Events: direct, Logs: evidence.PodLogs(kube.CoreV1()),
	}
	key := f.quarantine(t, "qkeep", pod.Name, act(securityv1alpha1.ActionIsolate))
	q := getQ(t, key)
	q.Spec.Reason = &securityv1alpha1.QuarantineReason{Policy: "shop-policy", Policies: []string{"shop-policy"}, Detector: "falco", Score: "0.95"}
	must(t, direct.Update(ctx, q))
	q = drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	ev := q.Status.Evidence
	if ev == nil || ev.SecretRef != evidence.SecretName(q) || len(ev.Scores) != 2 || ev.Scores[0].Weight != 50 {
		t.Fatalf("status evidence: %+v", ev)
	}
	uid := q.UID

	must(t, direct.Delete(ctx, q))
	drive(t, r, key, func(q *securityv1alpha1.Quarantine) bool { return q == nil })

	found, err := evidence.Find(ctx, direct, r.ManagerNamespace, f.ns, "qkeep")
	if err != nil || len(found) != 1 {
		t.Fatalf("evidence gone with its Quarantine: %v %d", err, len(found))
	}
	sec := found[0]
	if len(sec.OwnerReferences) != 0 || sec.Annotations[evidence.QuarantineUIDAnnotation] != string(uid) {
		t.Fatalf("evidence Secret: owners %v annotations %v", sec.OwnerReferences, sec.Annotations)
	}
	var inTenant corev1.SecretList
	must(t, direct.List(ctx, &inTenant, client.InNamespace(f.ns)))
	if len(inTenant.Items) != 0 {
		t.Fatalf("evidence written in the tenant's namespace: %d Secrets", len(inTenant.Items))
	}
	d, err := evidence.Decode(&sec)
	must(t, err)
	if len(d.Detectors) != 2 || !strings.Contains(string(d.Detectors[0].Evidence), "Terminal shell") || strings.Contains(string(d.Detectors[0].Evidence), "TopSecret") {
		t.Fatalf("detectors: %+v", d.Detectors)
	}
	if len(d.Fused) != 1 || d.Fused[0].Score != "0.825" {
		t.Fatalf("fused: %+v", d.Fused)
	}
	if len(d.Events) != 1 || d.Events[0].Reason != "BackOff" {
		t.Fatalf("events: %+v", d.Events)
	}
	if len(d.Logs) != 1 || d.Logs[0].Container != "web" || d.Logs[0].Unavailable == "" {
		t.Fatalf("logs: %+v", d.Logs)
	}
	if len(d.Containers) == 0 || d.Quarantine != "qkeep" || d.Namespace != f.ns {
		t.Fatalf("document: %+v", d)
	}

	now := time.Now()
	j := &evidence.Janitor{Client: direct, Secrets: direct, Quarantines: direct, Namespace: r.ManagerNamespace,
		Retention: evidence.DefaultRetention, Now: func() time.Time { return now }}
	_, err = j.RunOnce(ctx)
	must(t, err)
	must(t, direct.Get(ctx, client.ObjectKeyFromObject(&sec), &sec))
	now = now.Add(evidence.DefaultRetention + time.Minute)
	_, err = j.RunOnce(ctx)
	must(t, err)
	if found, _ := evidence.Find(ctx, direct, r.ManagerNamespace, f.ns, "qkeep"); len(found) != 0 {
		t.Fatal("evidence kept past its retention")
	}
}

// TestEvidenceGatheringNeverDelaysIsolation: logs that hang until the
// gather timeout do not hold back the isolating writes.
func TestEvidenceGatheringNeverDelaysIsolation(t *testing.T) {
	f := newFixture(t, 1)
	r, _ := newReconciler(direct)
	isolated := make(chan struct{})
	r.Evidence = &evidence.Sources{Timeout: 5 * time.Second, Logs: func(ctx context.Context, _, _, _ string, _, _ int64) ([]byte, error) {
		select {
		case <-isolated:
			return []byte("after isolation\n"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	key := f.quarantine(t, "qslow", f.pods[0].Name, act(securityv1alpha1.ActionIsolate))
	go func() {
		defer close(isolated)
		for range 200 {
			var np networkingv1.NetworkPolicyList
			if direct.List(ctx, &np, client.InNamespace(f.ns)) == nil && len(np.Items) > 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	q := drive(t, r, key, phaseIs(securityv1alpha1.PhaseContained))
	found, err := evidence.Find(ctx, direct, r.ManagerNamespace, f.ns, "qslow")
	if err != nil || len(found) != 1 {
		t.Fatal(err, len(found))
	}
	d, err := evidence.Decode(&found[0])
	must(t, err)
	if len(d.Logs) != 1 || len(d.Logs[0].Lines) != 1 || !strings.HasSuffix(d.Logs[0].Lines[0], "after isolation") {
		t.Fatalf("the log read finished only once the pod was isolated: %+v (phase %s)", d.Logs, q.Status.Phase)
	}
}
