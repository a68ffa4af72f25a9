package ingest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detection/detectiontest"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

var (
	sample             = detectiontest.Sample
	compact            = detectiontest.Compact
	falcosidekickEvent = detectiontest.FalcosidekickEvent
)

const testCredentials = `
# any namespace
ext-token name=ext detectors=my-model,falco # may name a built-in detector, yet not post it as a score
falco-token name=falco detectors=falco
web-token name=web detectors=my-model namespaces=web
sensor-token name=sensor detectors=behavior,tetragon,alertmanager train=true
cert:falco-client name=falco-cert detectors=falco
`

type recordingSink struct {
	mu      sync.Mutex
	signals []detector.Signal
}

func (s *recordingSink) Record(_ context.Context, sigs []detector.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signals = append(s.signals, sigs...)
	return nil
}

func (s *recordingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.signals)
}

// observer scores every syscall run 0.9 and every exec 0.6.
type observer struct {
	mu     sync.Mutex
	events []detector.BehaviorEvent
}

func (o *observer) ObserveBehavior(_ context.Context, evs []detector.BehaviorEvent) ([]detector.Signal, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, evs...)
	out := make([]detector.Signal, 0, len(evs))
	for _, e := range evs {
		s := 0.6
		if e.Syscalls != nil {
			s = 0.9
		}
		out = append(out, detector.Signal{Namespace: e.Namespace, Pod: e.Pod, Detector: detector.Behavior, Score: s})
	}
	return out, nil
}

type fixture struct {
	// remote is the client address of the requests (httptest's default when empty).
	remote   string
	h        *Handler
	sink     *recordingSink
	obs      *observer
	credPath string
}

func newFixture(t testing.TB, cfg Config, withBehavior bool) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(testCredentials), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := NewAuthenticator(path, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	keys := []detection.PodKey{{Namespace: "web", Pod: "shop-1"}, {Namespace: "web", Pod: "shop-2"}, {Namespace: "other", Pod: "x"},
		{Namespace: "default", Pod: "kubecon"}, {Namespace: "default", Pod: "alpine"}, {Namespace: "default", Pod: "xwing"}, {Namespace: "default", Pod: "file-access"}, {Namespace: "t1", Pod: "s2i-1-viafnz-5474c8b5b7-px7kz"}, {Namespace: "t1", Pod: "s2i-1-viafnz-89f49c678-2mzsm"},
		{Namespace: "openfaas-fn", Pod: "falco-pod-delete-7dc9f5fbb8-gbfk7"}, {Namespace: "default", Pod: "tiefighter"}, {Namespace: "default", Pod: "deathstar-6f87496b94-qdlh8"}, {Namespace: "default", Pod: "deathstar-6f87496b94-gjf74"}}
	pods := make([]corev1.Pod, 0, len(keys))
	for _, k := range keys {
		pods = append(pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Pod}})
	}
	b := fake.NewClientBuilder()
	for i := range pods {
		b = b.WithObjects(&pods[i])
	}
	f := &fixture{sink: &recordingSink{}, credPath: path}
	p := &detection.Pipeline{Registry: detection.NewRegistry(), Recorder: f.sink}
	if withBehavior {
		f.obs = &observer{}
		p.Model = f.obs
	}
	cfg.Auth, cfg.Detection, cfg.Pods = auth, p, b.Build()
	f.h = NewHandler(cfg)
	return f
}

type req struct {
	path, token, contentType, body string
	header                         map[string]string
	noLength                       bool
}

func (f *fixture) do(t testing.TB, r req) (int, Error) {
	code, e, _ := f.post(t, r)
	return code, e
}

// post also returns how many items the server accepted.
func (f *fixture) post(t testing.TB, r req) (int, Error, int) {
	t.Helper()
	var body io.Reader = strings.NewReader(r.body)
	if r.noLength {
		body = io.MultiReader(strings.NewReader(r.body)) // hides the length: chunked
	}
	hr := httptest.NewRequest(http.MethodPost, r.path, body)
	if r.noLength {
		hr.ContentLength = -1
	}
	if r.contentType == "" {
		r.contentType = "application/json"
	}
	hr.Header.Set("Content-Type", r.contentType)
	if f.remote != "" {
		hr.RemoteAddr = f.remote
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, hr)
	var e Error
	if w.Code >= 300 {
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Status != w.Code || e.Reason == "" || e.Message == "" {
			t.Errorf("%s: error body %q is not a JSON error (%v)", r.path, w.Body.String(), err)
		}
		return w.Code, e, 0
	}
	var ok struct{ Accepted int }
	if err := json.Unmarshal(w.Body.Bytes(), &ok); err != nil {
		t.Errorf("%s: answer %q: %v", r.path, w.Body.String(), err)
	}
	return w.Code, e, ok.Accepted
}

func score(ns, pod, det string, s any, id string) string {
	m := map[string]any{"namespace": ns, "pod": pod, "detector": det, "score": s}
	if id != "" {
		m["id"] = id
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestBadInputsAreRefusedAndChangeNothing(t *testing.T) {
	f := newFixture(t, Config{MaxBodyBytes: 4096, Rate: 1e6, Burst: 1e6}, true)
	// Accepted ids that later requests replay.
	if code, e := f.do(t, req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "seen-1") + "," + score("web", "shop-2", "my-model", 0.5, "seen-2") + "]"}); code != http.StatusAccepted {
		t.Fatalf("setup: %d %+v", code, e)
	}
	baseSignals, baseIDs := f.sink.count(), f.h.replay.order.Len()
	big := strings.Repeat(" ", 5000)
	okScore := score("web", "shop-1", "my-model", 0.5, "")

	cases := []struct {
		name   string
		r      req
		status int
		index  *int
	}{
		{"malformed JSON", req{path: "/v1/scores", token: "ext-token", body: `{"namespace":`}, 400, nil},
		{"not an object", req{path: "/v1/scores", token: "ext-token", body: `"hello"`}, 400, nil},
		{"score is a string", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", "0.5", "")}, 400, nil},
		{"score NaN as string", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", "NaN", "")}, 400, nil},
		{"score bare NaN", req{path: "/v1/scores", token: "ext-token", body: `{"namespace":"web","pod":"shop-1","detector":"my-model","score":NaN}`}, 400, nil},
		{"score negative", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", -0.1, "n1")}, 422, ptr(0)},
		{"score above 1", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", 1.5, "n2")}, 422, ptr(0)},
		{"score missing", req{path: "/v1/scores", token: "ext-token", body: `{"namespace":"web","pod":"shop-1","detector":"my-model"}`}, 400, ptr(0)},
		{"namespace missing", req{path: "/v1/scores", token: "ext-token", body: `{"pod":"shop-1","detector":"my-model","score":1}`}, 400, ptr(0)},
		{"unknown field", req{path: "/v1/scores", token: "ext-token", body: `{"namespace":"web","pod":"shop-1","detector":"my-model","score":1,"sccore":1}`}, 400, nil},
		{"detector not a DNS label", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "My_Model", 0.5, "")}, 400, ptr(0)},
		{"empty batch", req{path: "/v1/scores", token: "ext-token", body: `[]`}, 400, nil},
		{"trailing data", req{path: "/v1/scores", token: "ext-token", body: okScore + ` {}`}, 400, nil},
		{"unknown pod", req{path: "/v1/scores", token: "ext-token", body: score("web", "nope", "my-model", 0.5, "n3")}, 422, ptr(0)},
		{"batch with one unknown pod", req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "n4") + "," + score("web", "gone", "my-model", 0.5, "n5") + "]"}, 422, ptr(1)},
		{"batch with one out of range", req{path: "/v1/scores", token: "ext-token", body: "[" + okScore + "," + score("web", "shop-2", "my-model", 2, "") + "]"}, 422, ptr(1)},
		{"built-in detector name", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "falco", 0.5, "")}, 403, ptr(0)},
		{"namespace not bound", req{path: "/v1/scores", token: "web-token", body: score("other", "x", "my-model", 0.5, "")}, 403, ptr(0)},
		{"detector not bound", req{path: "/v1/scores", token: "falco-token", body: okScore}, 403, ptr(0)},
		{"no token", req{path: "/v1/scores", body: okScore}, 401, nil},
		{"wrong token", req{path: "/v1/scores", token: "guess", body: okScore}, 401, nil},
		{"basic auth", req{path: "/v1/scores", header: map[string]string{"Authorization": "Basic ZXh0LXRva2Vu"}, body: okScore}, 401, nil},
		{"oversized body", req{path: "/v1/scores", token: "ext-token", body: okScore + big}, 413, nil},
		{"oversized chunked body", req{path: "/v1/scores", token: "ext-token", body: okScore + big, noLength: true}, 413, nil},
		{"wrong content type", req{path: "/v1/scores", token: "ext-token", contentType: "text/plain", body: okScore}, 415, nil},
		{"replayed id", req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", 0.5, "seen-1")}, 409, ptr(0)},
		{"replayed batch with one new item", req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "fresh-1") + "," + score("web", "shop-2", "my-model", 0.5, "seen-2") + "]"}, 409, ptr(1)},
		{"replayed batch with one bad item", req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "seen-1") + "," + score("web", "shop-2", "my-model", -1, "fresh-2") + "]"}, 422, ptr(1)},
		{"id repeated within a batch", req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "dup") + "," + score("web", "shop-2", "my-model", 0.5, "dup") + "]"}, 409, ptr(1)},
		{"falco without priority", req{path: "/v1/falco", token: "falco-token", body: `{"rule":"r","output_fields":{"k8s.ns.name":"web","k8s.pod.name":"shop-1"}}`}, 400, ptr(0)},
		{"falco bad time", req{path: "/v1/falco", token: "falco-token", body: `{"rule":"r","priority":"Critical","time":"yesterday","output_fields":{"k8s.ns.name":"web","k8s.pod.name":"shop-1"}}`}, 400, ptr(0)},
		{"falco unknown pod", req{path: "/v1/falco", token: "falco-token", body: `{"rule":"r","priority":"Critical","output_fields":{"k8s.ns.name":"web","k8s.pod.name":"ghost"}}`}, 422, ptr(0)},
		{"falco with an external token", req{path: "/v1/falco", token: "web-token", body: string(sample(t, "docs-channels-critical-terminal-shell.json"))}, 403, ptr(0)},
		{"alertmanager version 3", req{path: "/v1/alertmanager", token: "sensor-token", body: `{"version":"3","alerts":[]}`}, 400, nil},
		{"alertmanager score label not a number", req{path: "/v1/alertmanager", token: "sensor-token", body: `{"version":"4","alerts":[{"status":"firing","labels":{"namespace":"web","pod":"shop-1","bulkhead_score":"high"}}]}`}, 400, ptr(0)},
		{"alertmanager score label NaN", req{path: "/v1/alertmanager", token: "sensor-token", body: `{"version":"4","alerts":[{"status":"firing","labels":{"namespace":"web","pod":"shop-1","bulkhead_score":"NaN"}}]}`}, 400, ptr(0)},
		{"alertmanager score label above 1", req{path: "/v1/alertmanager", token: "sensor-token", body: `{"version":"4","alerts":[{"status":"firing","labels":{"namespace":"web","pod":"shop-1","bulkhead_score":"1.7"}}]}`}, 422, ptr(0)},
		{"tetragon bad line", req{path: "/v1/tetragon", token: "sensor-token", contentType: "application/x-ndjson", body: "{\"process_exec\":{}}\nnot json\n"}, 400, ptr(1)},
		{"cloudevents plain text", req{path: "/v1/cloudevents", token: "falco-token", contentType: "text/plain", body: "hi"}, 415, nil},
		{"cloudevents batch mode", req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/cloudevents-batch+json", body: "[]"}, 415, nil},
		{"cloudevent without id", req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/cloudevents+json", body: `{"specversion":"1.0","type":"falco.rule.output.v1","source":"s","data":{}}`}, 400, nil},
		{"cloudevent of an unknown type", req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/cloudevents+json", body: `{"specversion":"1.0","type":"com.example.x","source":"s","id":"1","data":{}}`}, 400, nil},
		{"syscalls without calls", req{path: "/v1/syscalls", token: "sensor-token", body: `{"namespace":"web","pod":"shop-1","calls":"  "}`}, 400, ptr(0)},
		{"syscalls with an external token", req{path: "/v1/syscalls", token: "ext-token", body: `{"namespace":"web","pod":"shop-1","calls":"open"}`}, 403, ptr(0)},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d bad inputs", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, e := f.do(t, tc.r)
			if code != tc.status {
				t.Fatalf("status %d (%+v), want %d", code, e, tc.status)
			}
			if (tc.index == nil) != (e.Index == nil) || (tc.index != nil && *tc.index != *e.Index) {
				t.Errorf("index %v, want %v", e.Index, tc.index)
			}
			if n := f.sink.count(); n != baseSignals {
				t.Errorf("recorded %d signals", n-baseSignals)
			}
			if n := f.h.replay.order.Len(); n != baseIDs {
				t.Errorf("consumed %d replay ids", n-baseIDs)
			}
			if len(f.obs.events) != 0 {
				t.Errorf("behavior model saw %d events", len(f.obs.events))
			}
		})
	}
	// The fresh ids of refused batches were not consumed.
	if code, e := f.do(t, req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "fresh-1") + "," + score("web", "shop-2", "my-model", 0.5, "fresh-2") + "]"}); code != http.StatusAccepted {
		t.Errorf("fresh ids after refusals: %d %+v", code, e)
	}
}

func ptr(i int) *int { return &i }

func TestAcceptedFormats(t *testing.T) {
	f := newFixture(t, Config{}, true)
	structured, binHeader, binData := falcosidekickEvent(t)
	binaryHeader := map[string]string{}
	for k := range binHeader {
		binaryHeader[k] = binHeader.Get(k)
	}
	for _, tc := range []struct {
		name               string
		r                  req
		accepted, recorded int
	}{
		{"scores batch", req{path: "/v1/scores", token: "ext-token", body: "[" + score("web", "shop-1", "my-model", 0.5, "a") + "," + score("web", "shop-2", "my-model", 1, "b") + "]"}, 2, 2},
		{"falco", req{path: "/v1/falco", token: "falco-token", body: string(sample(t, "docs-channels-critical-terminal-shell.json"))}, 1, 1},
		{"falco ndjson", req{path: "/v1/falco", token: "falco-token", contentType: "application/x-ndjson", body: string(sample(t, "blog-openfaas-notice.ndjson"))}, 2, 2},
		{"cloudevents structured", req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/cloudevents+json", body: string(structured)}, 1, 1},
		{"tetragon", req{path: "/v1/tetragon", token: "sensor-token", contentType: "application/x-ndjson", body: string(sample(t, "testdata-events.ndjson")) + string(compact(t, sample(t, "process_kprobe-1-file-access.json")))}, 4, 4},
		{"alertmanager", req{path: "/v1/alertmanager", token: "sensor-token", body: string(sample(t, "firing-3-no-version.json"))}, 2, 2},
		{"syscalls", req{path: "/v1/syscalls", token: "sensor-token", body: `[{"namespace":"web","pod":"shop-1","calls":"open read"},{"namespace":"web","pod":"shop-2","calls":"execve"}]`}, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.sink.count()
			code, e, accepted := f.post(t, tc.r)
			if code != http.StatusAccepted || accepted != tc.accepted {
				t.Fatalf("status %d accepted %d (%+v), want 202 and %d", code, accepted, e, tc.accepted)
			}
			if got := f.sink.count() - before; got != tc.recorded {
				t.Errorf("recorded %d signals, want %d", got, tc.recorded)
			}
		})
	}
	t.Run("cloudevents binary, replay of the structured one", func(t *testing.T) {
		code, _ := f.do(t, req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/json", header: binaryHeader, body: string(binData)})
		if code != http.StatusConflict {
			t.Errorf("same source+id in binary mode: %d, want 409", code)
		}
	})
	if got := testutil.ToFloat64(metrics.IngestedEvents.WithLabelValues("tetragon", "accepted")); got < 3 {
		t.Errorf("metric tetragon accepted = %v", got)
	}
}

func TestSyscallsWithoutModel(t *testing.T) {
	f := newFixture(t, Config{}, false)
	code, _ := f.do(t, req{path: "/v1/syscalls", token: "sensor-token", body: `{"namespace":"web","pod":"shop-1","calls":"open"}`})
	if code != http.StatusServiceUnavailable || f.sink.count() != 0 {
		t.Errorf("status %d, recorded %d", code, f.sink.count())
	}
}

func TestRateLimitPerCredential(t *testing.T) {
	f := newFixture(t, Config{Rate: 0.001, Burst: 2}, true)
	body := score("web", "shop-1", "my-model", 0.5, "")
	for i, want := range []int{202, 202, 429} {
		if code, _ := f.do(t, req{path: "/v1/scores", token: "ext-token", body: body}); code != want {
			t.Errorf("request %d: %d, want %d", i, code, want)
		}
	}
	if code, _ := f.do(t, req{path: "/v1/scores", token: "web-token", body: body}); code != 202 {
		t.Errorf("another credential was limited too: %d", code)
	}
}

func TestTokenRotationWithoutRestart(t *testing.T) {
	f := newFixture(t, Config{}, true)
	body := score("web", "shop-1", "my-model", 0.5, "")
	if code, _ := f.do(t, req{path: "/v1/scores", token: "ext-token", body: body}); code != 202 {
		t.Fatalf("before rotation: %d", code)
	}
	if err := os.WriteFile(f.credPath, []byte("rotated-token name=ext detectors=my-model\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.h.cfg.Auth.mu.Lock()
	f.h.cfg.Auth.checked = f.h.cfg.Auth.checked.Add(-2e9) // the once-a-second check is due
	f.h.cfg.Auth.mu.Unlock()
	if code, _ := f.do(t, req{path: "/v1/scores", token: "ext-token", body: body}); code != 401 {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	if code, _ := f.do(t, req{path: "/v1/scores", token: "rotated-token", body: body}); code != 202 {
		t.Errorf("new token: %d", code)
	}
	// A broken file no longer keeps the removed token (it asserted the
	// opposite before issue 14): its good lines are in force, the rest is
	// reported (TestFailedReloadRevokesRemovedTokens).
	if err := os.WriteFile(f.credPath, []byte("tok bad-field\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.h.cfg.Auth.mu.Lock()
	f.h.cfg.Auth.checked = f.h.cfg.Auth.checked.Add(-2e9)
	f.h.cfg.Auth.mu.Unlock()
	if code, _ := f.do(t, req{path: "/v1/scores", token: "rotated-token", body: body}); code != 401 || f.h.cfg.Auth.LoadError() == nil {
		t.Errorf("broken file: %d, load error %v", code, f.h.cfg.Auth.LoadError())
	}
}

func TestParseCredentials(t *testing.T) {
	for _, bad := range []string{"tok detectors", "tok colour=red", "tok detectors=", "tok name=a", "tok detectors=Bad_Name", "tok detectors=a train=maybe",
		"a detectors=x name=same\nb detectors=y name=same"} {
		if _, err := ParseCredentials([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	c, err := ParseCredentials([]byte(testCredentials))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.tokens) != 4 || c.certs["falco-client"] == nil {
		t.Errorf("tokens=%d certs=%v", len(c.tokens), c.certs)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, Config{}, true)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/scores", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}
}

// Every reason a source refuses input with is answered with a 4xx: the
// decoders' fuzz targets (internal/detection) check they use no other.
func TestDecodeReasonsAre4xx(t *testing.T) {
	for _, r := range []string{detection.ReasonMalformed, detection.ReasonUnsupportedMedia, detection.ReasonOutOfRange} {
		if e := fromDecode(&detection.Error{Reason: r, Message: "m"}); e.Status < 400 || e.Status > 499 || e.Reason != r {
			t.Errorf("%s: answered %d %s", r, e.Status, e.Reason)
		}
	}
}
