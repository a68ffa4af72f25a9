package kubeutil

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// At most n requests other than watches reach the server at once; the
// rest wait, and a slot frees when a response body is closed or read to
// its end. Watches are never held back.
func TestLimitInFlight(t *testing.T) {
	var now, most atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			_, _ = io.WriteString(w, "watching")
			return
		}
		n := now.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		now.Add(-1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	const limit = 3
	rt := LimitInFlight(limit)(http.DefaultTransport)
	get := func(ctx context.Context, query string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api?"+query, nil)
		return rt.RoundTrip(req)
	}

	var wg sync.WaitGroup
	bodies := make(chan *http.Response, 10)
	for range 10 {
		wg.Go(func() {
			resp, err := get(context.Background(), "")
			if err != nil {
				t.Error(err)
				return
			}
			bodies <- resp
		})
	}
	for deadline := time.Now().Add(10 * time.Second); now.Load() < limit && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a request past the limit to arrive
	if n := now.Load(); n != limit {
		t.Fatalf("%d requests at the server, want %d", n, limit)
	}
	// A watch passes while the slots are taken.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	resp, err := get(wctx, "watch=true")
	if err != nil {
		t.Fatalf("watch held back by the limit: %v", err)
	}
	_ = resp.Body.Close()
	// A request over the limit gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting request: %v, want its context's deadline", err)
	}
	close(release)
	// Half the bodies are read to their end without Close, half closed
	// unread: both free their slots, so all ten complete.
	for i := range 10 {
		var resp *http.Response
		select {
		case resp = <-bodies:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 10 requests answered: slots not freed", i)
		}
		if i%2 == 0 {
			_, _ = io.ReadAll(resp.Body)
		} else {
			_ = resp.Body.Close()
		}
	}
	wg.Wait()
	if m := most.Load(); m != limit {
		t.Errorf("at most %d requests at the server at once, want %d", m, limit)
	}
}

// No limit wraps nothing.
func TestLimitInFlightZero(t *testing.T) {
	if rt := LimitInFlight(0)(http.DefaultTransport); rt != http.DefaultTransport {
		t.Fatalf("LimitInFlight(0) wrapped the transport: %T", rt)
	}
}

// A slot is freed exactly once per request: read to its end and then
// closed (what client-go does), failed in the transport, or answered with
// no body. Freeing it twice would take another request's slot.
func TestLimitInFlightFreesEachSlotOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	const limit = 2
	rt := LimitInFlight(limit)(http.DefaultTransport).(*inFlight)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	do := func(url string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		return rt.RoundTrip(req)
	}

	held, err := do(srv.URL) // one slot stays taken throughout
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		resp, err := do(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if n := len(rt.slots); n != 1 {
			t.Fatalf("%d slots taken after a body read and closed, want 1 (the held one)", n)
		}
	}
	for range limit + 1 {
		if _, err := do(down.URL); err == nil {
			t.Fatal("request to a closed server succeeded")
		}
	}
	if n := len(rt.slots); n != 1 {
		t.Fatalf("%d slots taken after failed requests, want 1", n)
	}
	_ = held.Body.Close()
	if n := len(rt.slots); n != 0 {
		t.Fatalf("%d slots taken after every body closed, want 0", n)
	}
}

func TestIsWatch(t *testing.T) {
	for q, want := range map[string]bool{
		"watch=true": true, "watch=1": true, "watch=True": true, "watch": true, "watch=": true,
		"": false, "watch=false": false, "watch=FALSE": false, "watch=0": false, "labelSelector=watch": false,
	} {
		req, _ := http.NewRequest(http.MethodGet, "https://api/api/v1/pods?"+q, nil)
		if got := isWatch(req); got != want {
			t.Errorf("%q: isWatch %v, want %v", q, got, want)
		}
	}
}
