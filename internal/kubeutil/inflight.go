package kubeutil

import (
	"io"
	"net/http"
	"strings"
	"sync"
)

// DefaultMaxInFlight bounds the manager's requests to the API server that
// are not watches. kube-apiserver allows 100 concurrent streams on an
// HTTP/2 connection (its default, --http2-max-streams-per-connection=0);
// past that, Go's transport dials another TLS connection for every request
// that does not fit. In a burst (make bench-drop, 200 threats) the manager
// had 99 creates waiting on such dials at once, each a TLS handshake for a
// CPU the API server needs. 96 (with the watches, one or two connections)
// measured best on the 2-core bench machine: 200-threat time to isolate p99
// 1.69 s (no limit: 1.92 s; 64: 2.67 s, too few requests in flight to keep
// the API server busy), score → packets dropped p99 1.8 and 2.3 s (no
// limit: 3.0–4.3 s).
const DefaultMaxInFlight = 96

// LimitInFlight returns a WrapTransport (rest.Config) that lets at most n
// requests other than watches be in flight, counted from the request to
// the end of its response body, across every client the config makes; a
// request over the limit waits for a slot (or for its context). n <= 0: no
// limit.
func LimitInFlight(n int) func(http.RoundTripper) http.RoundTripper {
	if n <= 0 {
		return func(rt http.RoundTripper) http.RoundTripper { return rt }
	}
	slots := make(chan struct{}, n)
	return func(rt http.RoundTripper) http.RoundTripper {
		return &inFlight{rt: rt, slots: slots}
	}
}

type inFlight struct {
	rt    http.RoundTripper
	slots chan struct{}
}

func (l *inFlight) RoundTrip(req *http.Request) (*http.Response, error) {
	if isWatch(req) {
		return l.rt.RoundTrip(req) // long-running: its stream is the watch's for its life
	}
	select {
	case l.slots <- struct{}{}:
	case <-req.Context().Done():
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, req.Context().Err()
	}
	resp, err := l.rt.RoundTrip(req)
	if err != nil || resp.Body == nil {
		<-l.slots
		return resp, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: func() { <-l.slots }}
	return resp, nil
}

// isWatch reads the watch parameter as the API server does: present with
// any value but "0" or "false" (any case), even empty.
func isWatch(req *http.Request) bool {
	v, ok := req.URL.Query()["watch"]
	return ok && len(v) > 0 && v[0] != "0" && !strings.EqualFold(v[0], "false")
}

// releasingBody frees its slot once, when the body is read to its end or
// closed: the HTTP/2 stream stays open until then.
type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
