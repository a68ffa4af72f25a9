package plugin

import (
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/exposure"
	"github.com/bulkhead-dev/bulkhead/internal/ingest"
)

// TestExplainLive runs the leader's explain endpoint (the real ingest
// handler, TokenReview and SubjectAccessReview against the control plane,
// a real evaluator holding recorded scores) and the plugin against it: a
// ServiceAccount allowed to get quarantines in namespace A sees A's live
// scores, streak and ladder distances; for namespace B the leader answers
// 403 and explain still shows what was recorded and says why the live part
// is missing.
func TestExplainLive(t *testing.T) {
	ctx := context.Background()
	nsA := namespace(t, map[string]string{"tier": "web"})
	nsB := namespace(t, map[string]string{"tier": "web"})
	mgr := namespace(t, nil)
	for _, ns := range []string{nsA, nsB} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: ns, Labels: map[string]string{"app": "live-shop"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}},
		}
		if err := admin.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	policy(t, "live-web", securityv1alpha1.ModeEnforce, "live-shop", 10, securityv1alpha1.ThreatPolicyStatus{})

	// A viewer who may get quarantines in A only.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "viewer"}}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "quarantine-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{securityv1alpha1.GroupVersion.Group}, Resources: []string{"quarantines"}, Verbs: []string{"get"}}}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "quarantine-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: nsA, Name: sa.Name}}}
	if err := admin.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, rb); err != nil {
		t.Fatal(err)
	}
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if err := admin.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token

	// The leader: an evaluator holding scores of both pods, behind the
	// ingest handler over TLS.
	assessor, err := exposure.NewAssessor(nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := detection.NewEvaluator(detection.NewStore(time.Minute, 100), admin, assessor, detection.NewTriggers(), nil)
	for _, ns := range []string{nsA, nsB} {
		for range 2 {
			if err := ev.Record(ctx, []detector.Signal{{Namespace: ns, Pod: "shop-1", Detector: "behavior", Score: 0.9, Reason: "exec of /tmp/x"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := ingest.NewHandler(ingest.Config{Auth: &ingest.Authenticator{}, AddressRate: -1,
		Explain: &ingest.Explain{Viewers: &ingest.Viewers{Client: admin}, Source: ev}})
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	explain := func(ns string, extra ...string) string {
		return mustRun(t, append([]string{"explain", "shop-1", "-n", ns, "--manager-namespace", mgr,
			"--ingest-url", srv.URL, "--ingest-ca-file", caFile}, extra...)...)
	}

	out := explain(nsA, "--ingest-token", token)
	t.Logf("explain with live scores:\n%s", out)
	if !strings.Contains(out, "Live scores:  from the leader at") || !strings.Contains(out, "behavior 0.9, ") || !strings.Contains(out, "old: exec of /tmp/x") {
		t.Errorf("A: no live detector scores:\n%s", out)
	}
	web := section(out, "live-web")
	for _, want := range []string{
		"Live score:    0.9 now (destructive steps allowed)",
		"behavior 0.9 (weight 60): exec of /tmp/x",
		"Streak:        2 of 3 evaluation(s) at or above 0.8, last evaluated",
		"≥ 0.80  Isolate  ← live score reaches this step",
		"≥ 0.95  Isolate, ScaleToZero, CordonNode  (live: 0.05 to go)",
	} {
		if !strings.Contains(web, want) {
			t.Errorf("A: live-web section lacks %q:\n%s", want, web)
		}
	}

	// The score rises: the live view shows the top step reached, and what
	// would happen follows it.
	if err := ev.Record(ctx, []detector.Signal{{Namespace: nsA, Pod: "shop-1", Detector: "falco", Score: 1},
		{Namespace: nsA, Pod: "shop-1", Detector: "behavior", Score: 1}}); err != nil {
		t.Fatal(err)
	}
	web = section(explain(nsA, "--ingest-token", token), "live-web")
	for _, want := range []string{
		"Live score:    1 now",
		"Streak:        4 of 3 evaluation(s) at or above 0.8, last evaluated ",
		" ago; triggered",
		"≥ 0.95  Isolate, ScaleToZero, CordonNode  ← live score reaches this step",
		"create a Quarantine applying Isolate, ScaleToZero, CordonNode",
	} {
		if !strings.Contains(web, want) {
			t.Errorf("A after a 1.0: live-web section lacks %q:\n%s", want, web)
		}
	}

	// B: allowed to read the API (alice), but the token may not read B's scores.
	out = explain(nsB, "--ingest-token", token)
	if !strings.Contains(out, "Live scores:  unavailable: the leader answered 403 Forbidden") || strings.Contains(out, "Live score:") {
		t.Errorf("B: want the 403 explained and no live score:\n%s", out)
	}
	if !strings.Contains(out, "Policies covering this pod:") || !strings.Contains(section(out, "live-web"), "Ladder:") {
		t.Errorf("B: the recorded view is missing:\n%s", out)
	}

	// A forged token: 401; alice's client certificate: no token to send.
	if out = explain(nsA, "--ingest-token", "forged"); !strings.Contains(out, "unavailable: the leader answered 401 Unauthorized") {
		t.Errorf("forged token:\n%s", out)
	}
	if out = explain(nsA); !strings.Contains(out, "unavailable: the kubeconfig has no bearer token") {
		t.Errorf("client-certificate kubeconfig:\n%s", out)
	}
	// No --ingest-url: as before, and says so.
	out = mustRun(t, "explain", "shop-1", "-n", nsA, "--manager-namespace", mgr)
	if !strings.Contains(out, "Live scores:  not asked for") || strings.Contains(out, "Live score:") {
		t.Errorf("without --ingest-url:\n%s", out)
	}
}
