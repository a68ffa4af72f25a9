package nodekit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Load requests pages from a server in a loop (one every 40ms, no
// keep-alive: each request is a new connection) until stopped, counting
// answers.
type Load struct {
	mu       sync.Mutex
	ok, fail int
	lastErr  error
	stop     func()
}

// StartLoad requests base+paths[i] in turn until ctx ends or Stop.
func StartLoad(ctx context.Context, base string, paths ...string) *Load {
	ld := &Load{}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	ld.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			err := Get(ctx, base+paths[i%len(paths)])
			ld.mu.Lock()
			if err == nil {
				ld.ok++
			} else if ctx.Err() == nil {
				ld.fail++
				ld.lastErr = err
			}
			ld.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(40 * time.Millisecond):
			}
		}
	}()
	return ld
}

// Get requests u on a new connection (3s timeout) and reads the answer:
// nil for 200 OK.
func Get(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// Stop ends the loop and waits for it.
func (ld *Load) Stop() { ld.stop() }

// Stats are the pages served, the failures and the last failure's error.
func (ld *Load) Stats() (ok, fail int, last error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.ok, ld.fail, ld.lastErr
}
