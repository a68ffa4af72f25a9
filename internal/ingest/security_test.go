package ingest

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Issue 14 item 12: an unbound credential could speak for any non-built-in
// detector, so the documented fraud-model token could impersonate others.
func TestEveryCredentialNamesItsDetectors(t *testing.T) {
	if _, err := ParseCredentials([]byte("77d2-token name=fraud-model namespaces=web,shop\n")); err == nil ||
		!strings.Contains(err.Error(), "detectors= is required") {
		t.Fatalf("an unbound credential parsed (err %v)", err)
	}
	f := newFixture(t, Config{}, true)
	// web-token is bound to my-model: it cannot post as another model.
	if code, e := f.do(t, req{path: "/v1/scores", token: "web-token", body: score("web", "shop-1", "other-model", 0.9, "")}); code != http.StatusForbidden {
		t.Errorf("a credential spoke for a detector it does not name: %d %+v", code, e)
	}
}

// Issue 14 item 12: a credential bound to a built-in name could post
// /v1/scores as that detector, skipping its decoder (and the model).
func TestScoresRefuseBuiltinDetectorNames(t *testing.T) {
	f := newFixture(t, Config{}, true)
	for _, det := range []string{"behavior", "tetragon", "alertmanager"} {
		code, e := f.do(t, req{path: "/v1/scores", token: "sensor-token", body: score("web", "shop-1", det, 1, "")})
		if code != http.StatusForbidden || e.Reason != ReasonForbidden {
			t.Errorf("/v1/scores as built-in %s with a credential bound to it: %d %+v, want 403", det, code, e)
		}
	}
	// The same through a CloudEvent carrying a scores body.
	ce := `{"specversion":"1.0","type":"dev.bulkhead.score.v1","source":"s","id":"ce-1","datacontenttype":"application/json","data":` + score("web", "shop-1", "falco", 1, "") + `}`
	if code, e := f.do(t, req{path: "/v1/cloudevents", token: "falco-token", contentType: "application/cloudevents+json", body: ce}); code != http.StatusForbidden {
		t.Errorf("a score CloudEvent as falco: %d %+v, want 403", code, e)
	}
	if n := f.sink.count(); n != 0 {
		t.Errorf("recorded %d signals", n)
	}
}

// Issue 14 item 12: a tetragon credential trained the behavior baselines.
func TestTrainingIsASeparateRight(t *testing.T) {
	f := newFixture(t, Config{}, true)
	if err := os.WriteFile(f.credPath, []byte("tet-token name=tet detectors=tetragon,behavior\ntrain-token name=trainer detectors=tetragon,behavior train=true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.h.cfg.Auth.mu.Lock()
	f.h.cfg.Auth.checked = f.h.cfg.Auth.checked.Add(-2e9)
	f.h.cfg.Auth.mu.Unlock()
	exec := string(compact(t, sample(t, "process_exec-1.json")))
	kprobe := string(compact(t, sample(t, "process_kprobe-1-file-access.json")))
	for _, tc := range []struct {
		name, path, token, body string
		want                    int
	}{
		{"exec without the right", "/v1/tetragon", "tet-token", exec, 403},
		{"syscalls without the right", "/v1/syscalls", "tet-token", `{"namespace":"web","pod":"shop-1","calls":"open"}`, 403},
		{"kprobe score without the right", "/v1/tetragon", "tet-token", kprobe, 202},
		{"exec with the right", "/v1/tetragon", "train-token", exec, 202},
		{"syscalls with the right", "/v1/syscalls", "train-token", `{"namespace":"web","pod":"shop-1","calls":"open"}`, 202},
	} {
		before := len(f.obs.events)
		code, e := f.do(t, req{path: tc.path, token: tc.token, contentType: "application/x-ndjson", body: tc.body})
		if tc.path == "/v1/syscalls" {
			code, e = f.do(t, req{path: tc.path, token: tc.token, body: tc.body})
		}
		if code != tc.want {
			t.Errorf("%s: %d %+v, want %d", tc.name, code, e, tc.want)
		}
		if tc.want == 403 && len(f.obs.events) != before {
			t.Errorf("%s: the model learned from a refused request", tc.name)
		}
	}
}

// Issue 14 low: "#" inside a token cut it, so "ab#cd" became "ab".
func TestHashInsideTokenIsKept(t *testing.T) {
	cs, err := ParseCredentials([]byte("# a comment\nab#cd name=hash detectors=my-model # trailing comment\n\t# indented comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.tokens) != 1 {
		t.Fatalf("%d tokens", len(cs.tokens))
	}
	a := &Authenticator{sets: map[string]*Credentials{OriginFile: cs}}
	for tok, want := range map[string]bool{"ab#cd": true, "ab": false} {
		r, _ := http.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if got := a.Authenticate(r) != nil; got != want {
			t.Errorf("token %q authenticated = %v, want %v", tok, got, want)
		}
	}
}

// Issue 14 low: the replay key was detector+id, so one credential could
// burn another's ids in advance.
func TestReplayKeyIsBoundToCredential(t *testing.T) {
	f := newFixture(t, Config{}, true)
	if code, e := f.do(t, req{path: "/v1/scores", token: "ext-token", body: score("web", "shop-1", "my-model", 0.2, "id-7")}); code != 202 {
		t.Fatalf("first: %d %+v", code, e)
	}
	if code, e := f.do(t, req{path: "/v1/scores", token: "web-token", body: score("web", "shop-1", "my-model", 0.9, "id-7")}); code != 202 {
		t.Errorf("another credential's id blocked this one: %d %+v", code, e)
	}
	if code, _ := f.do(t, req{path: "/v1/scores", token: "web-token", body: score("web", "shop-1", "my-model", 0.9, "id-7")}); code != http.StatusConflict {
		t.Errorf("a replay by the same credential: %d, want 409", code)
	}
}

// Issue 14 low: a reload error was silent and kept revoked tokens.
func TestFailedReloadRevokesRemovedTokens(t *testing.T) {
	f := newFixture(t, Config{}, true)
	body := score("web", "shop-1", "my-model", 0.5, "")
	// The operator revokes ext-token and makes a typo on another line.
	if err := os.WriteFile(f.credPath, []byte("web-token name=web detectors=my-model namespaces=web\ntypo-token name=typo detectors\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.h.cfg.Auth.mu.Lock()
	f.h.cfg.Auth.checked = f.h.cfg.Auth.checked.Add(-2e9)
	f.h.cfg.Auth.mu.Unlock()
	if code, _ := f.do(t, req{path: "/v1/scores", token: "ext-token", body: body}); code != http.StatusUnauthorized {
		t.Errorf("revoked token after a failed reload: %d, want 401", code)
	}
	if code, _ := f.do(t, req{path: "/v1/scores", token: "web-token", body: body}); code != 202 {
		t.Errorf("a good line of the broken file: %d, want 202", code)
	}
	if err := f.h.cfg.Auth.LoadError(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("load error %v, want one naming line 2", err)
	}
	if got := testutil.ToFloat64(metrics.IngestCredentialErrors.WithLabelValues(OriginFile)); got != 1 {
		t.Errorf("bulkhead_ingest_credential_errors{origin=file} = %v, want 1", got)
	}
	// A removed file revokes everything.
	if err := os.Remove(f.credPath); err != nil {
		t.Fatal(err)
	}
	f.h.cfg.Auth.mu.Lock()
	f.h.cfg.Auth.checked = f.h.cfg.Auth.checked.Add(-2e9)
	f.h.cfg.Auth.mu.Unlock()
	if code, _ := f.do(t, req{path: "/v1/scores", token: "web-token", body: body}); code != http.StatusUnauthorized {
		t.Errorf("token of a removed file: %d, want 401", code)
	}
}

// Issue 14 item 7: requests were rate-limited only after authentication.
func TestAddressRateLimitBeforeAuth(t *testing.T) {
	f := newFixture(t, Config{AddressRate: 0.001, AddressBurst: 3}, true)
	before := testutil.ToFloat64(metrics.IngestRefused.WithLabelValues(ReasonRateLimitedAddress))
	body := score("web", "shop-1", "my-model", 0.5, "")
	for i, want := range []int{401, 401, 401, 429} {
		if code, _ := f.do(t, req{path: "/v1/scores", token: "guess", body: body, header: map[string]string{}}); code != want {
			t.Errorf("unauthenticated request %d: %d, want %d", i, code, want)
		}
	}
	if got := testutil.ToFloat64(metrics.IngestRefused.WithLabelValues(ReasonRateLimitedAddress)) - before; got != 1 {
		t.Errorf("refused by address counted %v, want 1", got)
	}
	// httptest requests come from 192.0.2.1; another address is not limited.
	f.remote = "198.51.100.7:4000"
	if code, e := f.do(t, req{path: "/v1/scores", token: "ext-token", body: body}); code != 202 {
		t.Errorf("another address: %d %+v", code, e)
	}
	// Unknown paths are answered and counted too.
	if code, _ := f.do(t, req{path: "/v1/nothing", token: "ext-token", body: body}); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}
}

func TestAddressLimiterIsBounded(t *testing.T) {
	a := newAddressLimiter(1, 1, 4)
	for i := range 100 {
		a.allow(net.JoinHostPort(net.IPv4(10, 0, byte(i/256), byte(i)).String(), "1"))
	}
	if n := len(a.byAddr); n > 4 {
		t.Errorf("%d limiters kept, want at most 4", n)
	}
	// IPv6 addresses of one /64 share a limiter.
	b := newAddressLimiter(1, 1, 100)
	if !b.allow("[2001:db8::1]:1") || b.allow("[2001:db8::2]:1") {
		t.Error("two addresses of one /64 were limited separately")
	}
}

func TestConnectionCaps(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitConnections(raw, 3, 2)
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	before := testutil.ToFloat64(metrics.IngestRefused.WithLabelValues(ReasonTooManyConnections))
	dial("127.0.0.1")
	dial("127.0.0.1")
	<-accepted
	c2 := <-accepted
	over := dial("127.0.0.1") // third from one address: closed
	buf := make([]byte, 1)
	if _, err := over.Read(buf); err == nil {
		t.Error("a connection over the per-address cap was kept open")
	}
	dial("127.0.0.2") // another address still gets in
	<-accepted
	if got := testutil.ToFloat64(metrics.IngestRefused.WithLabelValues(ReasonTooManyConnections)) - before; got != 1 {
		t.Errorf("refused connections counted %v, want 1", got)
	}
	// Closing frees the slot.
	_ = c2.Close()
	dial("127.0.0.1")
	<-accepted
}

// Issue 14 item 7: the ingest port took net/http's default 1 MiB of headers.
func TestHeaderCap(t *testing.T) {
	f := newFixture(t, Config{}, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Handler: f.h, Insecure: true}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	post := func(headerBytes int) int {
		r, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/scores", strings.NewReader(score("web", "shop-1", "my-model", 0.5, "")))
		r.Header.Set("Authorization", "Bearer ext-token")
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Pad", strings.Repeat("a", headerBytes))
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(1024); code != http.StatusAccepted {
		t.Errorf("small headers: %d", code)
	}
	if code := post(DefaultMaxHeaderBytes + 8192); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers over the cap: %d, want 431", code)
	}
}
