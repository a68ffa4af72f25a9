package sensor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// SenderConfig configures the client of the manager's sensor ingestion.
type SenderConfig struct {
	Node string
	// URL is the manager's ingestion base address (https://host:port); the
	// request goes to URL + wire.Path.
	URL string
	// TokenFile holds the bearer token; re-read before every request since
	// the kubelet rotates projected tokens.
	TokenFile string
	// CAFile verifies the manager's certificate; empty uses the system roots.
	CAFile string
	// InsecureSkipVerify is for tests only.
	InsecureSkipVerify bool
	// HeartbeatInterval is the longest silence (default 30s).
	HeartbeatInterval time.Duration
	// MaxBuffered bounds scores waiting for the manager (default 1000); the
	// oldest are dropped beyond it.
	MaxBuffered int
	// MaxPerRequest bounds scores per request (default 500).
	MaxPerRequest int
	// BackoffBase and BackoffMax bound retry delays after a failure
	// (defaults 1s and the heartbeat interval); each delay is jittered.
	BackoffBase, BackoffMax time.Duration
	// Timeout of one request (default 10s).
	Timeout time.Duration
	// MinInterval between requests (default 1s): urgent scores arriving
	// together share one request, which bounds a node's rate under attack.
	MinInterval time.Duration
}

func (c SenderConfig) withDefaults() SenderConfig {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 30 * time.Second
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 1000
	}
	if c.MaxPerRequest <= 0 {
		c.MaxPerRequest = 500
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = c.HeartbeatInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MinInterval <= 0 {
		c.MinInterval = time.Second
	}
	return c
}

// State is what every request reports besides scores.
type State func() (wire.Coverage, []wire.Enforcement)

// SenderStats are the sender's counters.
type SenderStats struct {
	Sent, Failed, Rejected uint64 // requests: 2xx, retryable failures, 4xx
	Dropped                uint64 // scores dropped from a full buffer
	RejectedScores         uint64 // scores in 4xx'd payloads
	Buffered               int
}

// Sender posts scores and heartbeats to the manager: scores as soon as they
// are enqueued, a heartbeat when idle for HeartbeatInterval; failed scores
// wait in a bounded buffer and are retried with jittered exponential backoff.
type Sender struct {
	cfg   SenderConfig
	http  *http.Client
	log   logr.Logger
	kick  chan struct{}
	now   func() time.Time
	state State

	mu      sync.Mutex
	buf     []wire.Score
	stats   SenderStats
	lastLog time.Time
}

// NewSender checks the configuration (URL, CA) and returns a sender. state
// may be nil (ready coverage, no enforcement).
func NewSender(cfg SenderConfig, state State, log logr.Logger) (*Sender, error) {
	cfg = cfg.withDefaults()
	if cfg.URL == "" {
		return nil, errors.New("ingest URL is empty")
	}
	if !strings.HasPrefix(cfg.URL, "https://") && !strings.HasPrefix(cfg.URL, "http://") {
		return nil, fmt.Errorf("ingest URL %q: want https://host:port", cfg.URL)
	}
	if cfg.TokenFile == "" {
		return nil, errors.New("token file is empty")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // tests only, by flag
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = 1
	if state == nil {
		state = func() (wire.Coverage, []wire.Enforcement) { return wire.Coverage{Ready: true}, nil }
	}
	return &Sender{
		cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		log: log, kick: make(chan struct{}, 1), now: time.Now, state: state,
	}, nil
}

// Enqueue buffers scores; urgent ones (a rising score, which may complete a
// policy) are sent as soon as MinInterval and any backoff allow, the others
// with the next heartbeat.
func (s *Sender) Enqueue(urgent bool, scores ...wire.Score) {
	if len(scores) == 0 {
		return
	}
	s.mu.Lock()
	s.buf = append(s.buf, scores...)
	if over := len(s.buf) - s.cfg.MaxBuffered; over > 0 {
		s.buf = append(s.buf[:0], s.buf[over:]...)
		s.stats.Dropped += uint64(over)
	}
	s.mu.Unlock()
	if urgent {
		s.Kick()
	}
}

// Kick asks for a send as soon as any backoff allows (enforcement changed).
func (s *Sender) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (s *Sender) Stats() SenderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Buffered = len(s.buf)
	return st
}

// Run sends until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	failures := 0
	wait := time.Duration(0) // the first heartbeat goes out at once
	var last time.Time
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.kick:
			t.Stop()
			// Backing off, wait out the delay; else keep MinInterval.
			if failures == 0 {
				wait = time.Until(last.Add(s.cfg.MinInterval))
			}
			if !s.sleep(ctx, wait) {
				return
			}
		}
		last = time.Now()
		if err := s.SendOnce(ctx); err != nil {
			failures++
			wait = s.backoff(failures)
			continue
		}
		failures = 0
		wait = s.cfg.HeartbeatInterval
		s.mu.Lock()
		if len(s.buf) > 0 {
			wait = s.cfg.MinInterval
		}
		s.mu.Unlock()
	}
}

// sleep waits d unless ctx ends first.
func (s *Sender) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff is the delay after n consecutive failures: exponential from
// BackoffBase to BackoffMax, with full jitter in its upper half so sensors
// that lost the manager together do not return together.
func (s *Sender) backoff(n int) time.Duration {
	d := s.cfg.BackoffBase
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// errRetry marks failures worth retrying (network, 5xx, unreadable token).
var errRetry = errors.New("retryable")

// SendOnce posts one payload: up to MaxPerRequest buffered scores with the
// heartbeat. Scores leave the buffer on 2xx and on 4xx (final for that
// payload); on any other outcome they stay for the next attempt.
func (s *Sender) SendOnce(ctx context.Context) error {
	s.mu.Lock()
	n := min(len(s.buf), s.cfg.MaxPerRequest)
	scores := append([]wire.Score{}, s.buf[:n]...)
	dropped := s.stats.Dropped
	s.mu.Unlock()

	cov, enf := s.state()
	if enf == nil {
		enf = []wire.Enforcement{}
	}
	p := wire.Report{
		Node: s.cfg.Node, Time: s.now().UTC(), Heartbeat: true, Coverage: cov,
		Scores: scores, Enforcement: enf, Dropped: dropped,
	}
	code, err := s.post(ctx, &p)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil && code/100 == 2:
		s.stats.Sent++
		s.remove(scores)
		return nil
	case err == nil && code/100 == 4:
		s.stats.Rejected++
		s.stats.RejectedScores += uint64(len(scores))
		s.remove(scores)
		s.log.Error(nil, "manager rejected a sensor payload; its scores are dropped", "status", code, "scores", len(scores))
		return nil
	}
	if err == nil {
		err = fmt.Errorf("%w: HTTP %d", errRetry, code)
	}
	s.stats.Failed++
	if now := s.now(); now.Sub(s.lastLog) >= time.Minute {
		s.lastLog = now
		s.log.Error(err, "manager unreachable; buffering scores", "buffered", len(s.buf), "dropped", s.stats.Dropped)
	}
	return err
}

// remove takes the sent scores out of the buffer. The buffer may have moved
// meanwhile (new scores appended, old ones dropped), so match by ID.
func (s *Sender) remove(sent []wire.Score) {
	if len(sent) == 0 {
		return
	}
	gone := make(map[string]bool, len(sent))
	for _, sc := range sent {
		gone[sc.ID] = true
	}
	kept := s.buf[:0]
	for _, sc := range s.buf {
		if !gone[sc.ID] {
			kept = append(kept, sc)
		}
	}
	clear(s.buf[len(kept):])
	s.buf = kept
}

func (s *Sender) post(ctx context.Context, p *wire.Report) (int, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return 0, err
	}
	token, err := os.ReadFile(s.cfg.TokenFile)
	if err != nil {
		return 0, fmt.Errorf("%w: reading token: %v", errRetry, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(s.cfg.URL, "/")+wire.Path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errRetry, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
