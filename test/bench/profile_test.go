//go:build bench

package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/test/framework/kit"
)

// profiler saves the manager's pprof profiles and metrics of the
// 200-threat phase (and the API server's CPU profile) into BENCH_PPROF (a
// directory); unset, it does nothing. It must be made before the cluster
// starts.
type profiler struct {
	dir            string
	pprof, metrics string
}

func newProfiler() (*profiler, error) {
	dir := os.Getenv("BENCH_PPROF")
	if dir == "" {
		return &profiler{}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Read by the local cluster's API server when it starts.
	if err := os.Setenv("BULKHEAD_APISERVER_PROFILING", "1"); err != nil {
		return nil, err
	}
	addrs := make([]string, 2)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addrs[i] = l.Addr().String()
		_ = l.Close()
	}
	return &profiler{dir: dir, pprof: addrs[0], metrics: addrs[1]}, nil
}

// args are the manager's flags for profiling.
func (p *profiler) args() []string {
	if p.dir == "" {
		return nil
	}
	return []string{"--pprof-bind-address=" + p.pprof, "--metrics-bind-address=" + p.metrics, "--metrics-secure=false"}
}

// start takes CPU profiles of the manager and of the API server for d and
// a goroutine dump of the manager after g (BENCH_PPROF_GOROUTINES_AFTER,
// e.g. 1.5s, overrides it), in the background; the returned func waits for
// all three.
func (p *profiler) start(ctx context.Context, env *kit.Env, name string, d, g time.Duration) func() {
	if p.dir == "" {
		return func() {}
	}
	done := make(chan struct{}, 3)
	go func() {
		p.save(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprof, int(d.Seconds())), name+".cpu.pprof")
		done <- struct{}{}
	}()
	go func() {
		raw, err := env.Fast.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", fmt.Sprint(int(d.Seconds()))).Timeout(d + time.Minute).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(filepath.Join(p.dir, name+".apiserver.cpu.pprof"), raw, 0o644)
		}
		if err != nil {
			logf("profile %s apiserver cpu: %v", name, err)
		}
		done <- struct{}{}
	}()
	if v, err := time.ParseDuration(os.Getenv("BENCH_PPROF_GOROUTINES_AFTER")); err == nil {
		g = v
	}
	go func() {
		time.Sleep(g)
		p.save(ctx, "http://"+p.pprof+"/debug/pprof/goroutine?debug=1", name+".goroutines.txt")
		done <- struct{}{}
	}()
	return func() { <-done; <-done; <-done }
}

// saveMetrics saves the manager's metrics (workqueue, client latency) and
// the API server's (priority and fairness waits, request latencies).
func (p *profiler) saveMetrics(ctx context.Context, env *kit.Env, name string) {
	if p.dir == "" {
		return
	}
	p.save(ctx, "http://"+p.metrics+"/metrics", name+".metrics.txt")
	raw, err := env.Fast.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err == nil {
		err = os.WriteFile(filepath.Join(p.dir, name+".apiserver.txt"), raw, 0o644)
	}
	if err != nil {
		logf("profile %s apiserver metrics: %v", name, err)
	}
}

func (p *profiler) save(ctx context.Context, url, file string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	f, err := os.Create(filepath.Join(p.dir, file))
	if err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	defer func() { _ = f.Close() }()
	if _, err := io.Copy(f, resp.Body); err != nil {
		logf("profile %s: %v", file, err)
	}
}

// extraManagerArgs are BENCH_MANAGER_ARGS (space-separated manager flags),
// for comparing settings, such as --kube-api-max-in-flight=0.
func extraManagerArgs() []string { return strings.Fields(os.Getenv("BENCH_MANAGER_ARGS")) }
