package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// reviewer stands in for TokenReview: token "node-<name>" is that node's
// sensor, "unbound" a sensor token bound to no pod, anything else refused.
type reviewer struct{}

func (reviewer) Review(_ context.Context, token string) (sensorhub.Identity, error) {
	switch {
	case token == "unbound":
		return sensorhub.Identity{Username: "sensor"}, nil
	case strings.HasPrefix(token, "node-"):
		return sensorhub.Identity{Username: "sensor", Node: strings.TrimPrefix(token, "node-")}, nil
	}
	return sensorhub.Identity{}, sensorhub.ErrUnauthenticated
}

func sensorFixture(t testing.TB, cfg Config) (*fixture, *sensorhub.Hub) {
	hub := sensorhub.NewHub(func(_ context.Context, ns, pod string) (string, bool, error) {
		switch ns + "/" + pod {
		case "web/shop-1":
			return "n1", true, nil
		case "web/shop-2":
			return "n2", true, nil
		}
		return "", false, nil
	})
	cfg.Sensors = &Sensors{Reviewer: reviewer{}, Hub: hub}
	return newFixture(t, cfg, false), hub
}

func sensorBody(node, pod string, score float64, id string) string {
	now := time.Now().UTC().Format(time.RFC3339)
	return fmt.Sprintf(`{"node":%q,"time":%q,"heartbeat":true,"coverage":{"ready":true},
	 "scores":[{"namespace":"web","pod":%q,"score":%v,"reason":"new binary /bin/sh spawned by nginx","id":%q,"time":%q}]}`,
		node, now, pod, score, id, now)
}

// The node sensors' route: only a sensor token passes, a sensor speaks for
// its own node's pods only, bad reports are 4xx and change nothing, scores
// reach detection as the behavior detector, replays are refused.
func TestSensorRoute(t *testing.T) {
	f, hub := sensorFixture(t, Config{})
	for _, tc := range []struct {
		name, token, ctype, body string
		status                   int
	}{
		{"no token", "", "application/json", sensorBody("n1", "shop-1", 0.9, "a"), http.StatusUnauthorized},
		{"a detector token is not a sensor token", "falco-token", "application/json", sensorBody("n1", "shop-1", 0.9, "a"), http.StatusUnauthorized},
		{"token bound to no node", "unbound", "application/json", sensorBody("n1", "shop-1", 0.9, "a"), http.StatusForbidden},
		{"another node's report", "node-n2", "application/json", sensorBody("n1", "shop-1", 0.9, "a"), http.StatusForbidden},
		{"another node's pod", "node-n1", "application/json", sensorBody("n1", "shop-2", 0.9, "a"), http.StatusForbidden},
		{"unknown pod", "node-n1", "application/json", sensorBody("n1", "ghost", 0.9, "a"), http.StatusUnprocessableEntity},
		{"score out of range", "node-n1", "application/json", sensorBody("n1", "shop-1", 1.5, "a"), http.StatusBadRequest},
		{"not json", "node-n1", "application/json", "{", http.StatusBadRequest},
		{"content type", "node-n1", "text/plain", sensorBody("n1", "shop-1", 0.9, "a"), http.StatusUnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, e := f.do(t, req{path: "/v1/sensor", token: tc.token, contentType: tc.ctype, body: tc.body})
			if code != tc.status {
				t.Fatalf("status %d (%+v), want %d", code, e, tc.status)
			}
			if f.sink.count() != 0 {
				t.Fatal("a refused report reached detection")
			}
		})
	}
	if len(hub.Nodes()) != 0 {
		t.Fatalf("refused reports recorded heartbeats: %+v", hub.Nodes())
	}
	code, e := f.do(t, req{path: "/v1/sensor", token: "node-n1", contentType: "application/json", body: sensorBody("n1", "shop-1", 0.9, "a")})
	if code != http.StatusAccepted {
		t.Fatalf("good report: %d %+v", code, e)
	}
	f.sink.mu.Lock()
	got := append([]detector.Signal(nil), f.sink.signals...)
	f.sink.mu.Unlock()
	if len(got) != 1 || got[0].Detector != detector.Behavior || got[0].Pod != "shop-1" || got[0].Score != 0.9 {
		t.Fatalf("signals %+v", got)
	}
	if n := hub.Nodes(); len(n) != 1 || n[0].Node != "n1" || !n[0].Ready {
		t.Fatalf("heartbeat %+v", n)
	}
	code, _ = f.do(t, req{path: "/v1/sensor", token: "node-n1", contentType: "application/json", body: sensorBody("n1", "shop-1", 0.9, "a")})
	if code != http.StatusConflict {
		t.Fatalf("replayed id: %d, want 409", code)
	}
}

// BenchmarkSensorHeartbeat is the manager's cost of one sensor request (an
// idle heartbeat, and one with a score) once the token review is cached:
// at 2 requests per node per minute, 1,000 nodes make 33 requests/s.
func BenchmarkSensorHeartbeat(b *testing.B) {
	// Unlimited: this measures handling, not the per-node rate limit.
	f, _ := sensorFixture(b, Config{Rate: 1e9, Burst: 1e9})
	seq := 0
	now := time.Now().UTC().Format(time.RFC3339)
	idle := fmt.Sprintf(`{"node":"n1","time":%q,"heartbeat":true,"coverage":{"ready":true}}`, now)
	for _, bc := range []struct {
		name string
		body func(i int) string
	}{
		{"idle", func(int) string { return idle }},
		{"score", func(int) string { seq++; return sensorBody("n1", "shop-1", 0.5, fmt.Sprint(seq)) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodPost, "/v1/sensor", strings.NewReader(bc.body(i)))
				r.Header.Set("Authorization", "Bearer node-n1")
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				f.h.ServeHTTP(w, r)
				if w.Code != http.StatusAccepted {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
