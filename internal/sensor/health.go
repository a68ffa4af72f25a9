package sensor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// health is the agent's coverage state, probes and metrics.
type health struct {
	a   *Agent
	reg *prometheus.Registry

	mu      sync.Mutex
	synced  bool
	missing string // why behaviour is not collected; "" when it is
}

func newHealth(a *Agent) *health {
	h := &health{a: a, reg: prometheus.NewRegistry(), missing: "collector not started yet"}
	gauge := func(name, help string, f func() float64) {
		h.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("bulkhead_sensor_bpf_available", "1 when the kernel collector runs on this node, 0 when BPF collection is unavailable (see /readyz for what is missing).", func() float64 {
		if h.coverage().Ready {
			return 1
		}
		return 0
	})
	gauge("bulkhead_sensor_tracked_containers", "Containers of this node's pods the collector observes.", func() float64 {
		a.stats.mu.Lock()
		defer a.stats.mu.Unlock()
		return float64(a.stats.trackedContainers)
	})
	gauge("bulkhead_sensor_syscall_duty_ratio", "Fraction of time system calls are collected: 1 always; below 1 under heavy system-call load (--syscall-cpu-budget), when the system-call program is attached in windows; 0 while collection is unavailable. Execs, connections and resource usage are always collected.", func() float64 {
		a.stats.mu.Lock()
		defer a.stats.mu.Unlock()
		return a.stats.duty.Ratio
	})
	gauge("bulkhead_sensor_syscall_rate", "The node's system calls per second (all tasks) in the system-call program's last attached window; 0 with --syscall-cpu-budget=0 (not measured).", func() float64 {
		a.stats.mu.Lock()
		defer a.stats.mu.Unlock()
		return a.stats.duty.Rate
	})
	gauge("bulkhead_sensor_buffered_scores", "Scores waiting for the manager.", func() float64 { return float64(a.sender.Stats().Buffered) })
	counter("bulkhead_sensor_dropped_scores_total", "Scores dropped because the manager was unreachable and the buffer was full.", func() float64 { return float64(a.sender.Stats().Dropped) })
	counter("bulkhead_sensor_rejected_scores_total", "Scores in payloads the manager rejected (4xx).", func() float64 { return float64(a.sender.Stats().RejectedScores) })
	counter("bulkhead_sensor_ingest_failures_total", "Requests to the manager that failed and will be retried.", func() float64 { return float64(a.sender.Stats().Failed) })
	counter("bulkhead_sensor_ingest_requests_total", "Requests the manager accepted.", func() float64 { return float64(a.sender.Stats().Sent) })
	counter("bulkhead_sensor_untracked_events_total", "Kernel events of cgroups no longer tracked (pod gone, cgroup replaced).", func() float64 {
		a.stats.mu.Lock()
		defer a.stats.mu.Unlock()
		return float64(a.stats.untrackedEvents)
	})
	return h
}

func (h *health) setSynced() {
	h.mu.Lock()
	h.synced = true
	h.mu.Unlock()
}

// setCollector records whether the collector runs (err == nil) or why not.
func (h *health) setCollector(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.missing = ""
	if err == nil {
		return
	}
	if ue := (*UnavailableError)(nil); errors.As(err, &ue) {
		h.missing = ue.Missing
		if ue.Err != nil {
			h.missing += ": " + ue.Err.Error()
		}
		return
	}
	h.missing = err.Error()
}

func (h *health) coverage() wire.Coverage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return wire.Coverage{Ready: h.missing == "", Missing: h.missing}
}

// ready is nil when the node's behaviour is observed and its pods are known.
func (h *health) ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.synced:
		return errors.New("node pods not synced from the API yet")
	case h.missing != "":
		return fmt.Errorf("behaviour collection unavailable: %s", h.missing)
	}
	return nil
}

// serve starts the probe and metrics listeners (either address may be empty).
func (h *health) serve(ctx context.Context, healthAddr, metricsAddr string) error {
	probes := http.NewServeMux()
	probes.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	probes.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	metrics := http.NewServeMux()
	metrics.Handle("/metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	for _, s := range []struct {
		addr string
		mux  *http.ServeMux
	}{{healthAddr, probes}, {metricsAddr, metrics}} {
		if s.addr == "" || s.addr == "0" {
			continue
		}
		l, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", s.addr, err)
		}
		srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	return nil
}

// Registry is the agent's metrics registry (for tests and embedding).
func (a *Agent) Registry() *prometheus.Registry { return a.health.reg }

// Ready is nil when the agent is ready (what /readyz answers).
func (a *Agent) Ready() error { return a.health.ready() }
