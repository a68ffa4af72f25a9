package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/evidence"
)

// TestDescribeShowsKeptEvidence: describe showed status only, and nothing
// once the Quarantine was deleted. It now shows the whole document from
// the manager namespace: for a live Quarantine, and after it is gone.
func TestDescribeShowsKeptEvidence(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, nil)
	mgr := securityv1alpha1.DefaultManagerNamespace
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: mgr}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	at := metav1.NewTime(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	d := evidence.Document{CapturedAt: at, Pod: "shop-1", Namespace: ns, Node: "node-a", Quarantine: "gone",
		Containers: []evidence.ContainerState{{Name: "app", RestartCount: 4, State: "waiting: CrashLoopBackOff", LastState: "terminated: Error, exit code 137"}},
		Events:     []evidence.PodEvent{{Time: at, Type: "Warning", Reason: "BackOff", Message: "Back-off restarting failed container", Count: 3}},
		Logs: []evidence.ContainerLog{
			{Container: "app", Lines: []string{"2026-11-24T11:59:59Z spawning /tmp/x"}, Truncated: true},
			{Container: "sidecar", Unavailable: "no preferred addresses found"},
		},
		Detectors: []evidence.DetectorScore{{Detector: "falco", Score: "0.95", Reason: "Terminal shell", Time: at, Evidence: []byte(`{"rule":"Terminal shell in container"}`)}},
		Fused: []evidence.FusedScore{{Policy: "web-tier", Score: "0.95", FreshWeight: 40, TotalWeight: 100,
			Breakdown: []securityv1alpha1.ScoreComponent{{Source: "falco", Score: "0.95", Weight: 40}}}},
	}
	raw, sum, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	gone := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: ns, UID: "uid-gone"}}
	if err := evidence.Spill(ctx, admin, mgr, gone, raw, sum); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "describe", "gone", "-n", ns)
	for _, want := range []string{
		"Quarantine " + ns + "/gone no longer exists",
		"Secret:  " + mgr + "/" + evidence.SecretName(gone),
		"waiting: CrashLoopBackOff",
		`Evidence from falco:  {"rule":"Terminal shell in container"}`,
		"Fused score of policy web-tier: 0.95 (fresh weight 40 of 100)",
		"falco 0.95 (weight 40)",
		"Back-off restarting failed container",
		"    2026-11-24T11:59:59Z spawning /tmp/x",
		"no log (no preferred addresses found)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	row(t, out, "app", "no", "4", "waiting:")
	row(t, out, "falco", "0.95", "2026-11-24T12:00:00Z", "Terminal", "shell")

	// A live Quarantine shows its status and then the kept document.
	live := quarantine(t, ns, "live", "shop-1", func(q *securityv1alpha1.Quarantine) {
		q.Status.Evidence = &securityv1alpha1.Evidence{CapturedAt: at, SHA256: sum, SizeBytes: int64(len(raw))}
	})
	live.Status.Evidence.SecretRef = evidence.SecretName(live)
	if err := admin.Status().Update(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := evidence.Spill(ctx, admin, mgr, live, raw, sum); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, "describe", "live", "-n", ns)
	if !strings.Contains(out, "Phase:") || !strings.Contains(out, "Back-off restarting failed container") {
		t.Errorf("describe of a live Quarantine lacks its kept evidence:\n%s", out)
	}
	if _, _, err := run(t, "", "describe", "never-was", "-n", ns); err == nil || !apierrors.IsNotFound(err) {
		t.Errorf("no Quarantine and no evidence: %v", err)
	}
}
