package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// entry is one line of a recording (JSON lines): a report the sensor sent,
// or a mark of what the demo did at that moment.
type entry struct {
	// AtMs is milliseconds since the sensor started.
	AtMs   int64        `json:"atMs"`
	Mark   string       `json:"mark,omitempty"`
	Report *wire.Report `json:"report,omitempty"`
}

const (
	markAttack   = "attack"
	markReleased = "released"
)

// tap sits between the sensor and the manager's ingestion: it forwards
// every request unchanged, hands each sensor report to onReport (the demo
// shows the scores) and, when recording, writes it to a recording.
type tap struct {
	URL      string
	start    time.Time
	srv      *http.Server
	onReport func(wire.Report)

	mu  sync.Mutex
	out *bufio.Writer
	f   *os.File
	n   int
}

func startTap(target string, record string, onReport func(wire.Report)) (*tap, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tap{URL: "http://" + l.Addr().String(), start: time.Now(), onReport: onReport}
	if record != "" {
		if t.f, err = os.Create(record); err != nil {
			_ = l.Close()
			return nil, err
		}
		t.out = bufio.NewWriter(t.f)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	t.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.Path && r.Method == http.MethodPost {
			body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if rep, err := wire.Decode(body); err == nil {
				t.write(entry{Report: &rep})
				if t.onReport != nil {
					t.onReport(rep)
				}
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = t.srv.Serve(l) }()
	return t, nil
}

// mark records what the demo did now.
func (t *tap) mark(m string) { t.write(entry{Mark: m}) }

func (t *tap) write(e entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.out == nil {
		return
	}
	e.AtMs = time.Since(t.start).Milliseconds()
	b, _ := json.Marshal(e)
	_, _ = t.out.Write(append(b, '\n'))
	t.n++
}

// close stops the tap and finishes the recording.
func (t *tap) close() error {
	_ = t.srv.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.out == nil {
		return nil
	}
	err := t.out.Flush()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	t.out = nil
	return err
}

// loadRecording reads a recording, validating every report as the manager
// would.
func loadRecording(path string) ([]entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []entry
	for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var e entry
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		if e.Report != nil {
			if err := e.Report.Validate(); err != nil {
				return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
			}
		} else if e.Mark != markAttack && e.Mark != markReleased {
			return nil, fmt.Errorf("%s line %d: neither a report nor a known mark", path, i+1)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: empty recording", path)
	}
	return out, nil
}
