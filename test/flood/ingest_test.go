//go:build chaos

package flood

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/test/framework"
	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
)

// Flood shape: attackers from several loopback addresses (127.0.0.2…),
// the legitimate detector from 127.0.0.1.
const (
	floodAddrs     = 6
	workersPerAddr = 12
	slowPerAddr    = 80 // half-sent headers held open, beyond the per-address cap
	floodFor       = 20 * time.Second
	// heapBound is generous: the manager's heap may grow by this much over
	// its level before the flood, whatever the attackers send.
	heapBound = 256 << 20
)

// TestIngestFlood floods the ingest port with unauthenticated requests,
// oversized headers and bodies, and half-sent requests held open, while a
// legitimate detector posts one score: it must be accepted and its pod
// contained, every refusal must be a 4xx (or a closed connection) and be
// counted, and the manager's Go heap must stay within heapBound of where it
// was (issue 14 item 7). Run with `make test-ingest-flood`.
func TestIngestFlood(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	env, err := kit.Start(ctx, 1, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	metricsAddr := freeAddr(t)
	// The per-address limits kit turns off, with a lower rate than the
	// default so the flood meets it too.
	mgr, err := env.StartManager("manager", "--metrics-bind-address="+metricsAddr, "--metrics-secure=false", "--ingest-rate-per-address=10", "--ingest-max-connections-per-address=64")
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(10 * time.Second)

	ns, pod := "flood-ingest", "victim-0"
	if err := env.Namespace(ns, map[string]string{"load": "ingest"}); err != nil {
		t.Fatal(err)
	}
	if err := env.Pod(ns, pod, map[string]string{"app": "victim"}, env.Cluster.Nodes[0]); err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(framework.Policies(kit.Policy("ingest-flood", "ingest", "victim", 1, 10, `[{type: Isolate, isolate: {allowDNS: true}}]`))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the policy reaches the manager's cache

	scrape := func() map[string]float64 { return scrapeMetrics(t, "http://"+metricsAddr+"/metrics") }
	heap0 := scrape()["go_memstats_heap_inuse_bytes"]
	rss0, _ := mgr.RSS()
	var peakHeap atomic.Int64
	peakHeap.Store(int64(heap0))
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			if h := int64(scrape()["go_memstats_heap_inuse_bytes"]); h > peakHeap.Load() {
				peakHeap.Store(h)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	host, port, _ := net.SplitHostPort(strings.TrimPrefix(mgr.Ingest.URL, "http://"))
	target := net.JoinHostPort(host, port)
	floodCtx, stopFlood := context.WithTimeout(ctx, floodFor)
	defer stopFlood()
	var sent, answered4xx, closed, other atomic.Int64
	var wg sync.WaitGroup
	for a := range floodAddrs {
		src := net.IPv4(127, 0, 0, byte(2+a))
		client := sourceClient(src)
		for w := range workersPerAddr {
			wg.Go(func() {
				for i := 0; floodCtx.Err() == nil; i++ {
					code, err := floodRequest(floodCtx, client, mgr.Ingest.URL, (w+i)%4)
					sent.Add(1)
					switch {
					case err != nil:
						closed.Add(1)
					case code >= 400 && code < 500:
						answered4xx.Add(1)
					default:
						other.Add(1)
					}
				}
			})
		}
		wg.Go(func() { holdHalfSent(floodCtx, src, target, slowPerAddr) })
	}

	// The legitimate score, from its own address, in the middle of the flood.
	time.Sleep(floodFor / 3)
	t0 := time.Now()
	code, msg, err := mgr.Ingest.PostScores(ctx, framework.Score{Namespace: ns, Pod: pod, Detector: kit.Detector, Score: 1, Reason: "real attack", ID: "legit-1"})
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("the legitimate score during the flood: %d %s %v", code, msg, err)
	}
	logf("legitimate score accepted in %s during the flood", time.Since(t0).Round(time.Millisecond))
	var q *securityv1alpha1.Quarantine
	if err := (framework.Wait{What: "the victim contained during the flood", Timeout: 60 * time.Second, Logf: logf}).Until(ctx, func(ctx context.Context) error {
		var err error
		if q, err = framework.QuarantineFor(ctx, env.Cluster.Client, ns, pod); err != nil {
			return err
		}
		if q.Status.Phase != securityv1alpha1.PhaseContained {
			return fmt.Errorf("phase %q %s", q.Status.Phase, framework.ActionStates(q))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	logf("contained %s after the score, flood still running: %v", time.Since(t0).Round(time.Millisecond), floodCtx.Err() == nil)
	wg.Wait()
	stopSampling()
	<-sampled
	after := scrape()
	_, hwm := mgr.RSS()

	mib := func(v float64) float64 { return v / (1 << 20) }
	logf("REPORT ingest flood: %d requests from %d addresses in %s: %d answered 4xx, %d connections refused or reset, %d other",
		sent.Load(), floodAddrs, floodFor, answered4xx.Load(), closed.Load(), other.Load())
	logf("REPORT manager Go heap in use: %.1f MiB before, peak %.1f MiB (sampled every 200ms), %.1f MiB after; RSS %.1f MiB before, VmHWM %.1f MiB",
		mib(heap0), mib(float64(peakHeap.Load())), mib(after["go_memstats_heap_inuse_bytes"]), mib(float64(rss0)), mib(float64(hwm)))
	logf("REPORT refusals counted: Unauthorized %v, RateLimitedAddress %v, TooManyConnections %v, NotFound %v",
		after[`bulkhead_ingested_events_total{outcome="Unauthorized",source="scores"}`],
		after[`bulkhead_ingest_refused_total{reason="RateLimitedAddress"}`],
		after[`bulkhead_ingest_refused_total{reason="TooManyConnections"}`],
		after[`bulkhead_ingest_refused_total{reason="NotFound"}`])

	if other.Load() != 0 {
		t.Errorf("%d flood requests were answered with neither a 4xx nor a closed connection", other.Load())
	}
	if answered4xx.Load() < 1000 {
		t.Errorf("only %d flood requests were answered 4xx: the flood did not flood", answered4xx.Load())
	}
	if peak := float64(peakHeap.Load()); peak-heap0 > heapBound {
		t.Errorf("heap grew by %.1f MiB during the flood, bound %.0f MiB", mib(peak-heap0), mib(heapBound))
	}
	if after[`bulkhead_ingested_events_total{outcome="Unauthorized",source="scores"}`] == 0 {
		t.Error("unauthenticated requests were not counted")
	}
	if after[`bulkhead_ingest_refused_total{reason="RateLimitedAddress"}`] == 0 || after[`bulkhead_ingest_refused_total{reason="TooManyConnections"}`] == 0 {
		t.Error("refusals before authentication were not counted")
	}
	if t.Failed() {
		logf("manager log tail:\n%s", mgr.Logs(3000))
	}
}

// floodRequest is one hostile request: a wrong token with a body over the
// limit, headers over the cap, no token, or an unknown path.
func floodRequest(ctx context.Context, c *http.Client, base string, kind int) (int, error) {
	var body io.Reader = strings.NewReader(`{"namespace":"flood-ingest","pod":"victim-0","detector":"load-model","score":1}`)
	path := "/v1/scores"
	hdr := http.Header{"Content-Type": {"application/json"}}
	switch kind {
	case 0: // bad token, 4 MiB body
		body = bytes.NewReader(make([]byte, 4<<20))
		hdr.Set("Authorization", "Bearer guessed-"+strconv.Itoa(int(time.Now().UnixNano()%1000)))
	case 1: // 64 KiB of headers
		hdr.Set("X-Pad", strings.Repeat("p", 64<<10))
	case 2: // no token
	case 3:
		path = "/v1/admin"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header = hdr
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// sourceClient sends from src.
func sourceClient(src net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// holdHalfSent opens n connections from src that send part of a request
// line and then nothing, until ctx ends (slowloris).
func holdHalfSent(ctx context.Context, src net.IP, target string, n int) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for ctx.Err() == nil {
		for len(conns) < n && ctx.Err() == nil {
			c, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				break
			}
			_, _ = c.Write([]byte("POST /v1/scores HTTP/1.1\r\nHost: x\r\n"))
			conns = append(conns, c)
		}
		// Drop the ones the server closed (timeouts, caps) and reopen.
		alive := conns[:0]
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
				_ = c.Close()
				continue
			}
			alive = append(alive, c)
		}
		conns = alive
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// scrapeMetrics reads a Prometheus text exposition into "name{labels}" →
// value (labels as exposed, sorted by the client library).
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		t.Logf("scrape: %v", err)
		return out
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
