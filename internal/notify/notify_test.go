package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	qtcontroller "github.com/bulkhead-dev/bulkhead/internal/controller/quarantine"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/test/framework/testenv"
)

var clientset kubernetes.Interface

// The Quarantine controller's hook takes this method as it is.
var _ = qtcontroller.QuarantineReconciler{OnPhaseChange: (*Dispatcher)(nil).OnPhaseChange}

func TestMain(m *testing.M) {
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clientset = kubernetes.NewForConfigOrDie(env.Config)
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// request is what a test server received.
type request struct {
	at     time.Time
	header http.Header
	body   []byte
	raw    *http.Request
}

// recorder is a local sink answering with the given status codes in turn
// (the last one repeats); it records every request.
type recorder struct {
	mu     sync.Mutex
	reqs   []request
	status []int
	got    chan struct{}
}

func newRecorder(t *testing.T, status ...int) (*recorder, string) {
	t.Helper()
	if len(status) == 0 {
		status = []int{http.StatusOK}
	}
	rec := &recorder{status: status, got: make(chan struct{}, 1000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw := r.Clone(context.Background())
		raw.Body = io.NopCloser(bytes.NewReader(body))
		rec.mu.Lock()
		n := len(rec.reqs)
		rec.reqs = append(rec.reqs, request{at: time.Now(), header: r.Header.Clone(), body: body, raw: raw})
		code := rec.status[min(n, len(rec.status)-1)]
		rec.mu.Unlock()
		w.WriteHeader(code)
		rec.got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// wait blocks until n more requests arrived.
func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for a request (have %d)", len(r.requests()))
		}
	}
}

func quarantine() *securityv1alpha1.Quarantine {
	return &securityv1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-7f9c", Namespace: "web", UID: "uid-1"},
		Spec: securityv1alpha1.QuarantineSpec{
			Target:   securityv1alpha1.Target{Kind: securityv1alpha1.TargetPod, Name: "shop-7f9c"},
			Actions:  []securityv1alpha1.Action{{Type: securityv1alpha1.ActionIsolate}},
			Approved: ptr.To(true),
			Reason:   &securityv1alpha1.QuarantineReason{Policy: "web-tier", Score: "0.97", Detector: "behavior", Summary: "new binary /tmp/x"},
		},
		Status: securityv1alpha1.QuarantineStatus{
			Target:  &securityv1alpha1.ResolvedTarget{Node: "n1", Owner: "Deployment/shop"},
			Actions: []securityv1alpha1.ActionStatus{{Type: securityv1alpha1.ActionIsolate, State: securityv1alpha1.ActionApplied, Resource: "NetworkPolicy/bulkhead-shop-7f9c"}},
		},
	}
}

// start runs d until the test ends; the Secret it watches does not exist
// unless the test creates it, so the test's setConfig stays in force.
func start(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	select {
	case <-d.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("dispatcher never became ready")
	}
}

func count(sink, outcome string) float64 {
	return testutil.ToFloat64(metrics.NotificationsTotal.WithLabelValues(sink, outcome))
}

func TestDeliversToEverySink(t *testing.T) {
	slack, slackURL := newRecorder(t)
	hook, hookURL := newRecorder(t)
	ce, ceURL := newRecorder(t)
	key, ceKey := bytes.Repeat([]byte("k"), MinHMACKeyBytes), bytes.Repeat([]byte("c"), MinHMACKeyBytes)
	d := New(clientset, Options{Namespace: "default", SecretName: "absent"})
	start(t, d)
	d.setConfig(Config{SlackWebhookURL: slackURL, WebhookURL: hookURL, WebhookHMACKey: key, CloudEventsURL: ceURL, CloudEventsHMACKey: ceKey})
	before := count(SinkWebhook, OutcomeDelivered)

	d.OnPhaseChange(context.Background(), quarantine(), securityv1alpha1.PhaseContaining, securityv1alpha1.PhaseContained)
	slack.wait(t, 1)
	hook.wait(t, 1)
	ce.wait(t, 1)

	var msg struct{ Text string }
	if err := json.Unmarshal(slack.requests()[0].body, &msg); err != nil {
		t.Fatalf("slack body: %v", err)
	}
	for _, want := range []string{"web/shop-7f9c", "*Contained*", "was Containing", "Pod/shop-7f9c", "web-tier", "0.97", "Isolate: Applied"} {
		if !strings.Contains(msg.Text, want) {
			t.Errorf("slack text %q lacks %q", msg.Text, want)
		}
	}

	hr := hook.requests()[0]
	if err := Verify(key, hr.body, hr.header.Get(SignatureHeader), time.Now(), time.Minute); err != nil {
		t.Errorf("webhook signature: %v", err)
	}
	var ev Event
	if err := json.Unmarshal(hr.body, &ev); err != nil {
		t.Fatalf("webhook body: %v", err)
	}
	if ev.Namespace != "web" || ev.Quarantine != "shop-7f9c" || ev.From != securityv1alpha1.PhaseContaining ||
		ev.To != securityv1alpha1.PhaseContained || ev.Reason.Score != "0.97" || ev.Owner != "Deployment/shop" ||
		len(ev.Actions) != 1 || ev.Actions[0].State != securityv1alpha1.ActionApplied {
		t.Errorf("webhook event = %+v", ev)
	}
	if hr.header.Get(DeliveryHeader) != ev.ID || ev.ID == "" {
		t.Errorf("delivery header %q, event id %q", hr.header.Get(DeliveryHeader), ev.ID)
	}

	got, err := cehttp.NewEventFromHTTPRequest(ce.requests()[0].raw)
	if err != nil {
		t.Fatalf("cloudevent: %v", err)
	}
	if got.Type() != EventType || got.Source() != CloudEventSource || got.ID() != ev.ID || got.Subject() != "web/shop-7f9c" {
		t.Errorf("cloudevent attributes = %s", got)
	}
	var data Event
	if err := got.DataAs(&data); err != nil || data.To != securityv1alpha1.PhaseContained {
		t.Errorf("cloudevent data = %+v, %v", data, err)
	}
	// Issue 14 low: the CloudEvents sink was unsigned.
	cr := ce.requests()[0]
	if err := Verify(ceKey, cr.body, cr.header.Get(SignatureHeader), time.Now(), time.Minute); err != nil {
		t.Errorf("cloudevent signature: %v", err)
	}
	// The count follows the response, which the server sends after recording.
	waitFor(t, func() bool { return count(SinkWebhook, OutcomeDelivered)-before == 1 })
}

func TestSlackTextEscapesUntrustedText(t *testing.T) {
	q := quarantine()
	q.Spec.Reason.Summary = "exec of <https://evil.example|click> & <!channel>"
	text := slackText(newEvent("id", time.Now(), q, "", securityv1alpha1.PhaseContained))
	if strings.Contains(text, "<https") || strings.Contains(text, "<!channel>") || !strings.Contains(text, "&lt;https://evil.example|click&gt; &amp; &lt;!channel&gt;") {
		t.Errorf("summary not escaped: %q", text)
	}
}

func TestSignature(t *testing.T) {
	key, body := []byte("k"), []byte(`{"a":1}`)
	now := time.Unix(1_700_000_000, 0)
	h := Sign(key, body, now)
	if err := Verify(key, body, h, now.Add(time.Minute), DefaultSignatureTolerance); err != nil {
		t.Fatalf("valid signature rejected: %v", err)
	}
	for name, check := range map[string]func() error{
		"tampered body": func() error { return Verify(key, []byte(`{"a":2}`), h, now, DefaultSignatureTolerance) },
		"wrong key":     func() error { return Verify([]byte("other"), body, h, now, DefaultSignatureTolerance) },
		"replayed":      func() error { return Verify(key, body, h, now.Add(6*time.Minute), DefaultSignatureTolerance) },
		"moved timestamp": func() error {
			forged := strings.Replace(h, "t=1700000000", "t=1700000300", 1)
			return Verify(key, body, forged, now.Add(5*time.Minute), DefaultSignatureTolerance)
		},
		"no signature": func() error { return Verify(key, body, "t=1700000000", now, DefaultSignatureTolerance) },
	} {
		if check() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	const base = 50 * time.Millisecond
	hook, hookURL := newRecorder(t, 503, 502, 200)
	key := []byte("k")
	d := New(clientset, Options{Namespace: "default", SecretName: "absent", InitialBackoff: base, MaxAttempts: 5})
	start(t, d)
	d.setConfig(Config{WebhookURL: hookURL, WebhookHMACKey: key})
	delivered, failed := count(SinkWebhook, OutcomeDelivered), count(SinkWebhook, OutcomeFailed)

	d.OnPhaseChange(context.Background(), quarantine(), "", securityv1alpha1.PhasePending)
	hook.wait(t, 3)
	reqs := hook.requests()
	if gap := reqs[1].at.Sub(reqs[0].at); gap < base {
		t.Errorf("first retry after %v, want at least %v", gap, base)
	}
	if gap := reqs[2].at.Sub(reqs[1].at); gap < 2*base {
		t.Errorf("second retry after %v, want at least %v (doubled)", gap, 2*base)
	}
	for i, r := range reqs {
		if r.header.Get(DeliveryHeader) != reqs[0].header.Get(DeliveryHeader) {
			t.Errorf("attempt %d has delivery id %q, want the first one's", i, r.header.Get(DeliveryHeader))
		}
		if err := Verify(key, r.body, r.header.Get(SignatureHeader), time.Now(), time.Minute); err != nil {
			t.Errorf("attempt %d signature: %v", i, err)
		}
	}
	waitFor(t, func() bool { return count(SinkWebhook, OutcomeDelivered)-delivered == 1 })
	if count(SinkWebhook, OutcomeFailed) != failed {
		t.Error("a retried-then-delivered notification was counted as failed")
	}
	time.Sleep(4 * base)
	if n := len(hook.requests()); n != 3 {
		t.Errorf("%d requests after success, want 3", n)
	}
}

func TestGivesUp(t *testing.T) {
	for name, tc := range map[string]struct {
		status   []int
		attempts int
	}{
		"client error is not retried":          {[]int{400}, 1},
		"server errors until the last attempt": {[]int{500}, 3},
		"rate limit is retried":                {[]int{429, 429, 429}, 3},
	} {
		t.Run(name, func(t *testing.T) {
			rec, url := newRecorder(t, tc.status...)
			d := New(clientset, Options{Namespace: "default", SecretName: "absent", InitialBackoff: 10 * time.Millisecond, MaxAttempts: 3})
			start(t, d)
			d.setConfig(Config{CloudEventsURL: url})
			failed := count(SinkCloudEvents, OutcomeFailed)
			d.OnPhaseChange(context.Background(), quarantine(), "", securityv1alpha1.PhaseFailed)
			waitFor(t, func() bool { return count(SinkCloudEvents, OutcomeFailed)-failed == 1 })
			if n := len(rec.requests()); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

func TestNeverBlocksWhenSinksHang(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	hook, hookURL := newRecorder(t)

	const queue = 4
	d := New(clientset, Options{Namespace: "default", SecretName: "absent", QueueSize: queue, Timeout: time.Minute})
	start(t, d)
	d.setConfig(Config{SlackWebhookURL: srv.URL, WebhookURL: hookURL, WebhookHMACKey: []byte("k")})
	dropped := count(SinkSlack, OutcomeDropped)

	d.OnPhaseChange(context.Background(), quarantine(), "", securityv1alpha1.PhasePending)
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("slack never called")
	}
	// Slack now hangs on the first event; the webhook must not wait for it.
	hook.wait(t, 1)

	const burst = 50
	began := time.Now()
	for range burst {
		d.OnPhaseChange(context.Background(), quarantine(), securityv1alpha1.PhaseContaining, securityv1alpha1.PhaseContained)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("%d notifications took %v to enqueue with a hanging sink", burst, took)
	}
	if got := count(SinkSlack, OutcomeDropped) - dropped; got != burst-queue {
		t.Errorf("slack drops counted %v, want %d", got, burst-queue)
	}
}

func TestSecretReload(t *testing.T) {
	ctx := context.Background()
	keyOne, keyTwo := strings.Repeat("1", MinHMACKeyBytes), strings.Repeat("2", MinHMACKeyBytes)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "notify-"}}
	ns, err := clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, firstURL := newRecorder(t)
	second, secondURL := newRecorder(t)
	stranger, strangerURL := newRecorder(t)
	// Another Secret in the namespace must not be mistaken for the configuration.
	if _, err := clientset.CoreV1().Secrets(ns.Name).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "unrelated"},
		StringData: map[string]string{KeySlackWebhookURL: strangerURL},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secrets := clientset.CoreV1().Secrets(ns.Name)
	if _, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bulkhead-notifications"},
		StringData: map[string]string{KeyWebhookURL: firstURL, KeyWebhookHMACKey: keyOne},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := New(clientset, Options{Namespace: ns.Name, SecretName: "bulkhead-notifications", AllowLoopbackHTTP: true})
	start(t, d)
	d.OnPhaseChange(ctx, quarantine(), "", securityv1alpha1.PhasePending)
	first.wait(t, 1)
	r := first.requests()[0]
	if err := Verify([]byte(keyOne), r.body, r.header.Get(SignatureHeader), time.Now(), time.Minute); err != nil {
		t.Errorf("first key: %v", err)
	}

	if _, err := secrets.Update(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bulkhead-notifications"},
		StringData: map[string]string{KeyWebhookURL: secondURL, KeyWebhookHMACKey: keyTwo},
	}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { c := d.cfg.Load(); return c != nil && c.WebhookURL == secondURL })
	d.OnPhaseChange(ctx, quarantine(), securityv1alpha1.PhasePending, securityv1alpha1.PhaseContaining)
	second.wait(t, 1)
	r = second.requests()[0]
	if err := Verify([]byte(keyTwo), r.body, r.header.Get(SignatureHeader), time.Now(), time.Minute); err != nil {
		t.Errorf("rotated key: %v", err)
	}
	if n := len(first.requests()); n != 1 {
		t.Errorf("old URL got %d requests after the reload, want 1 in all", n)
	}

	if err := secrets.Delete(ctx, "bulkhead-notifications", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.configured()) == 0 })
	if n := len(stranger.requests()); n != 0 {
		t.Errorf("an unrelated Secret's sink got %d requests", n)
	}
}

func TestConfigFromSecret(t *testing.T) {
	cfg, err := ConfigFromSecret(&corev1.Secret{Data: map[string][]byte{
		KeySlackWebhookURL:    []byte("ftp://hooks.example/x"),
		KeyWebhookURL:         []byte("https://hooks.example/in"),
		KeyCloudEventsURL:     []byte("https://ce.example/"),
		KeyCloudEventsHMACKey: bytes.Repeat([]byte("x"), MinHMACKeyBytes),
	}}, false)
	if err == nil || !strings.Contains(err.Error(), KeySlackWebhookURL) || !strings.Contains(err.Error(), KeyWebhookHMACKey) {
		t.Errorf("error %v should name the bad Slack URL and the missing HMAC key", err)
	}
	if cfg.SlackWebhookURL != "" || cfg.WebhookURL != "" || cfg.CloudEventsURL != "https://ce.example/" {
		t.Errorf("config = %+v: want only the valid CloudEvents sink", cfg)
	}
}

// Issue 14 low: http:// was accepted, the CloudEvents sink needed no key,
// and a webhook key of any length was taken.
func TestSinksNeedHTTPSAndLongKeys(t *testing.T) {
	long := bytes.Repeat([]byte("k"), MinHMACKeyBytes)
	for _, tc := range []struct {
		name     string
		data     map[string][]byte
		loopback bool
		want     Config
		errHas   string
	}{
		{"http slack", map[string][]byte{KeySlackWebhookURL: []byte("http://hooks.example/x")}, false, Config{}, "https"},
		{"http loopback without the test switch", map[string][]byte{KeySlackWebhookURL: []byte("http://127.0.0.1:9/x")}, false, Config{}, "https"},
		{"http loopback in tests", map[string][]byte{KeySlackWebhookURL: []byte("http://127.0.0.1:9/x")}, true, Config{SlackWebhookURL: "http://127.0.0.1:9/x"}, ""},
		{"http non-loopback in tests", map[string][]byte{KeySlackWebhookURL: []byte("http://10.0.0.1/x")}, true, Config{}, "https"},
		{"short webhook key", map[string][]byte{KeyWebhookURL: []byte("https://h.example/"), KeyWebhookHMACKey: []byte("short")}, false, Config{}, KeyWebhookHMACKey},
		{"unsigned cloudevents", map[string][]byte{KeyCloudEventsURL: []byte("https://ce.example/")}, false, Config{}, KeyCloudEventsHMACKey},
		{"signed cloudevents", map[string][]byte{KeyCloudEventsURL: []byte("https://ce.example/"), KeyCloudEventsHMACKey: long}, false,
			Config{CloudEventsURL: "https://ce.example/", CloudEventsHMACKey: long}, ""},
	} {
		cfg, err := ConfigFromSecret(&corev1.Secret{Data: tc.data}, tc.loopback)
		if (tc.errHas == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%s: error %v, want one naming %q", tc.name, err, tc.errHas)
		}
		if cfg.SlackWebhookURL != tc.want.SlackWebhookURL || cfg.WebhookURL != tc.want.WebhookURL || cfg.CloudEventsURL != tc.want.CloudEventsURL ||
			!bytes.Equal(cfg.CloudEventsHMACKey, tc.want.CloudEventsHMACKey) {
			t.Errorf("%s: config %+v, want %+v", tc.name, cfg, tc.want)
		}
	}
}

// Issue 14 low: redirects were followed, so a sink could bounce a signed
// notification (or where a Slack URL's token is) to another host.
func TestRedirectsAreNotFollowed(t *testing.T) {
	elsewhere, elsewhereURL := newRecorder(t)
	redirect := httptest.NewServer(http.RedirectHandler(elsewhereURL, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	d := New(clientset, Options{Namespace: "default", SecretName: "absent", MaxAttempts: 3, InitialBackoff: time.Millisecond})
	start(t, d)
	failed := count(SinkSlack, OutcomeFailed)
	d.setConfig(Config{SlackWebhookURL: redirect.URL})
	d.OnPhaseChange(context.Background(), quarantine(), "", securityv1alpha1.PhasePending)
	waitFor(t, func() bool { return count(SinkSlack, OutcomeFailed) > failed })
	if n := len(elsewhere.requests()); n != 0 {
		t.Errorf("the redirect was followed: %d requests reached its target", n)
	}
}

// Issue 14 low: only the summary and action messages were escaped.
func TestSlackEscapesEveryField(t *testing.T) {
	q := quarantine()
	q.Spec.Reason.Detector = "<!here>"
	q.Spec.Reason.Policy = "<@U123>"
	text := slackText(newEvent("id", time.Now(), q, "", securityv1alpha1.PhaseContained))
	if strings.Contains(text, "<!here>") || strings.Contains(text, "<@U123>") {
		t.Errorf("fields not escaped: %q", text)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
