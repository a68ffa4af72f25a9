package notify

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// fakeEvents records what reaches the wrapped recorder.
type fakeEvents struct {
	mu      sync.Mutex
	reasons []string
}

func (f *fakeEvents) Eventf(_, _ runtime.Object, _, reason, _, _ string, _ ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reasons = append(f.reasons, reason)
}

// Issue 15 item 8: BudgetExhausted and an extended auto-release were only
// Kubernetes Events; whoever is on call never heard of them.
func TestNoticesReachTheSinks(t *testing.T) {
	slack, slackURL := newRecorder(t)
	hook, hookURL := newRecorder(t)
	ce, ceURL := newRecorder(t)
	key := bytes.Repeat([]byte("k"), MinHMACKeyBytes)
	d := New(clientset, Options{Namespace: "default", SecretName: "absent"})
	start(t, d)
	d.setConfig(Config{SlackWebhookURL: slackURL, WebhookURL: hookURL, WebhookHMACKey: key, CloudEventsURL: ceURL, CloudEventsHMACKey: key})
	inner := &fakeEvents{}
	rec := d.Recorder(inner)

	p := &securityv1alpha1.ThreatPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web-tier"}}
	rec.Eventf(p, nil, corev1.EventTypeWarning, securityv1alpha1.ReasonBudgetExhausted, "Evaluate", "%d active Quarantines reach maxActiveQuarantines %d", 5, 5)
	slack.wait(t, 1)
	hook.wait(t, 1)
	ce.wait(t, 1)
	var ev Event
	if err := json.Unmarshal(hook.requests()[0].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != BudgetExhaustedType || ev.Policy != "web-tier" || !strings.Contains(ev.Message, "maxActiveQuarantines 5") {
		t.Fatalf("budget notice = %+v", ev)
	}
	got, err := cehttp.NewEventFromHTTPRequest(ce.requests()[0].raw)
	if err != nil || got.Type() != BudgetExhaustedType || got.Subject() != "threatpolicy/web-tier" {
		t.Fatalf("cloudevent %v (%v)", got, err)
	}
	var msg struct{ Text string }
	if err := json.Unmarshal(slack.requests()[0].body, &msg); err != nil || !strings.Contains(msg.Text, "*web-tier* has no containment budget left") {
		t.Fatalf("slack %q (%v)", msg.Text, err)
	}

	q := quarantine()
	q.Status.Phase = securityv1alpha1.PhaseContained
	rec.Eventf(q, nil, corev1.EventTypeWarning, "AutoReleaseExtended", "Extend", "%s: auto-release extended to %s", "score still 0.97", "2026-12-07T10:00:00Z")
	hook.wait(t, 1)
	ev = Event{}
	if err := json.Unmarshal(hook.requests()[1].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != AutoReleaseExtendedType || ev.Quarantine != "shop-7f9c" || ev.To != securityv1alpha1.PhaseContained || !strings.Contains(ev.Message, "extended to 2026-12-07T10:00:00Z") {
		t.Fatalf("auto-release notice = %+v", ev)
	}

	// Every other Event is recorded only.
	rec.Eventf(q, nil, corev1.EventTypeNormal, "ActionApplied", "Apply", "Isolate applied")
	if len(hook.requests()) != 2 {
		t.Fatalf("an ordinary Event was sent as a notice")
	}
	inner.mu.Lock()
	defer inner.mu.Unlock()
	if strings.Join(inner.reasons, ",") != "BudgetExhausted,AutoReleaseExtended,ActionApplied" {
		t.Fatalf("the wrapped recorder saw %v", inner.reasons)
	}
}
