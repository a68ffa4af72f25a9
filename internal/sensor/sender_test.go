package sensor

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// fakeManager stands in for the manager's /v1/sensor endpoint over TLS.
type fakeManager struct {
	*httptest.Server
	mu       sync.Mutex
	status   int
	payloads []wire.Report
	tokens   []string
}

func newFakeManager(t testing.TB) *fakeManager {
	t.Helper()
	m := &fakeManager{status: http.StatusAccepted}
	m.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wire.Path || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request line", http.StatusNotFound)
			return
		}
		var p wire.Report
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.tokens = append(m.tokens, r.Header.Get("Authorization"))
		if m.status/100 == 2 {
			m.payloads = append(m.payloads, p)
		}
		w.WriteHeader(m.status)
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *fakeManager) setStatus(code int) {
	m.mu.Lock()
	m.status = code
	m.mu.Unlock()
}

func (m *fakeManager) received() ([]wire.Report, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]wire.Report{}, m.payloads...), append([]string{}, m.tokens...)
}

// caFile writes the test server's certificate as a CA bundle.
func (m *fakeManager) caFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate().Raw})
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeToken(t testing.TB, path, token string) {
	t.Helper()
	// Rename over the old file, as the kubelet's atomic writer does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func testSender(t testing.TB, m *fakeManager, cfg SenderConfig, state State) (*Sender, string) {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	writeToken(t, tok, "token-1")
	cfg.URL, cfg.TokenFile, cfg.CAFile, cfg.Node = m.URL, tok, m.caFile(t), "node-1"
	s, err := NewSender(cfg, state, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

func score(id string, v float64) wire.Score {
	return wire.Score{Namespace: "web", Pod: "shop-1", Score: v, Reason: "r", ID: id, Time: time.Unix(1e9, 0).UTC()}
}

func TestSenderPayloadAndTokenRotation(t *testing.T) {
	m := newFakeManager(t)
	enf := []wire.Enforcement{{Namespace: "web", Pod: "shop-1", Quarantine: "q", Enforced: true, Programs: []string{"cgroup_skb/egress"}}}
	s, tok := testSender(t, m, SenderConfig{}, func() (wire.Coverage, []wire.Enforcement) {
		return wire.Coverage{Ready: false, Missing: "BTF"}, enf
	})
	s.Enqueue(true, score("a", 0.9))
	if err := s.SendOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	writeToken(t, tok, "token-2")
	if err := s.SendOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	ps, toks := m.received()
	if len(ps) != 2 || toks[0] != "Bearer token-1" || toks[1] != "Bearer token-2" {
		t.Fatalf("tokens %q over %d payloads: want token-1 then the rotated token-2", toks, len(ps))
	}
	p := ps[0]
	if p.Node != "node-1" || !p.Heartbeat || p.Coverage.Ready || p.Coverage.Missing != "BTF" ||
		len(p.Scores) != 1 || p.Scores[0].ID != "a" || p.Scores[0].Score != 0.9 ||
		len(p.Enforcement) != 1 || !p.Enforcement[0].Enforced || p.Dropped != 0 || p.Time.IsZero() {
		t.Errorf("first payload %+v", p)
	}
	if len(ps[1].Scores) != 0 {
		t.Errorf("second payload resent scores: %+v", ps[1].Scores)
	}
}

func TestSenderBuffersWhileManagerFails(t *testing.T) {
	m := newFakeManager(t)
	s, _ := testSender(t, m, SenderConfig{MaxBuffered: 3}, nil)
	m.setStatus(http.StatusServiceUnavailable)
	for _, id := range []string{"1", "2", "3", "4", "5"} {
		s.Enqueue(false, score(id, 0.7))
	}
	if err := s.SendOnce(context.Background()); err == nil {
		t.Fatal("503: want an error")
	}
	if st := s.Stats(); st.Buffered != 3 || st.Dropped != 2 || st.Failed != 1 {
		t.Fatalf("after 503: %+v, want 3 buffered, 2 dropped, 1 failed", st)
	}
	m.setStatus(http.StatusOK)
	if err := s.SendOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	ps, _ := m.received()
	if len(ps) != 1 || len(ps[0].Scores) != 3 || ps[0].Scores[0].ID != "3" || ps[0].Dropped != 2 {
		t.Fatalf("after recovery: %+v, want the 3 newest scores (oldest dropped) and dropped=2", ps)
	}
	if st := s.Stats(); st.Buffered != 0 {
		t.Errorf("buffer not emptied: %+v", st)
	}
}

func TestSenderManagerDown(t *testing.T) {
	m := newFakeManager(t)
	s, _ := testSender(t, m, SenderConfig{}, nil)
	m.Close()
	s.Enqueue(true, score("x", 0.8))
	if err := s.SendOnce(context.Background()); err == nil {
		t.Fatal("manager down: want an error")
	}
	if st := s.Stats(); st.Buffered != 1 || st.Failed != 1 {
		t.Fatalf("%+v: want the score kept", st)
	}
}

func TestSenderRejectedIsFinal(t *testing.T) {
	m := newFakeManager(t)
	s, _ := testSender(t, m, SenderConfig{}, nil)
	m.setStatus(http.StatusForbidden)
	s.Enqueue(true, score("x", 0.8), score("y", 0.1))
	if err := s.SendOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Buffered != 0 || st.Rejected != 1 || st.RejectedScores != 2 {
		t.Fatalf("%+v: want both scores dropped as rejected", st)
	}
}

func TestSenderRefusesUnverifiedManager(t *testing.T) {
	m := newFakeManager(t)
	tok := filepath.Join(t.TempDir(), "token")
	writeToken(t, tok, "t")
	s, err := NewSender(SenderConfig{URL: m.URL, TokenFile: tok}, nil, logr.Discard()) // no CA: system roots
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendOnce(context.Background()); err == nil {
		t.Fatal("self-signed manager without --ca-file: want a TLS error")
	}
	s, err = NewSender(SenderConfig{URL: m.URL, TokenFile: tok, InsecureSkipVerify: true}, nil, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendOnce(context.Background()); err != nil {
		t.Fatalf("--insecure-skip-verify: %v", err)
	}
}

func TestSenderConfigErrors(t *testing.T) {
	for name, cfg := range map[string]SenderConfig{
		"no URL":     {TokenFile: "/t"},
		"bad scheme": {URL: "ftp://x", TokenFile: "/t"},
		"no token":   {URL: "https://x"},
		"missing CA": {URL: "https://x", TokenFile: "/t", CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := NewSender(cfg, nil, logr.Discard()); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSenderRunHeartbeatsAndRetries(t *testing.T) {
	m := newFakeManager(t)
	s, _ := testSender(t, m, SenderConfig{HeartbeatInterval: 50 * time.Millisecond, BackoffBase: 10 * time.Millisecond, MinInterval: time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// Idle: heartbeats alone.
	waitFor(t, "3 idle heartbeats", func() bool { ps, _ := m.received(); return len(ps) >= 3 })
	ps, _ := m.received()
	for _, p := range ps {
		if !p.Heartbeat || len(p.Scores) != 0 {
			t.Fatalf("idle payload %+v", p)
		}
	}
	// Down, then back: the score arrives by retry.
	m.setStatus(http.StatusBadGateway)
	s.Enqueue(true, score("late", 0.95))
	waitFor(t, "a failed attempt", func() bool { return s.Stats().Failed > 0 })
	m.setStatus(http.StatusOK)
	waitFor(t, "the buffered score", func() bool {
		ps, _ := m.received()
		for _, p := range ps {
			if len(p.Scores) == 1 && p.Scores[0].ID == "late" {
				return true
			}
		}
		return false
	})
}

func TestBackoffBounds(t *testing.T) {
	s := &Sender{cfg: SenderConfig{BackoffBase: time.Second, BackoffMax: 30 * time.Second}}
	for n := 1; n < 20; n++ {
		want := time.Second << min(n-1, 5)
		want = min(want, 30*time.Second)
		for range 50 {
			if d := s.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
