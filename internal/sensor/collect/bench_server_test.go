package collect

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// benchRoleEnv makes the test binary a benchmark process: "serve" (the file
// server in the tracked cgroup) or "load" (the client, outside it, so the
// test process's own CPU is the sensor's alone). It is read in init, before
// TestMain, because TestMain's helper switch belongs to the kernel tests.
const benchRoleEnv = "BULKHEAD_BENCH_ROLE"

func init() {
	switch os.Getenv(benchRoleEnv) {
	case "serve":
		os.Exit(benchServe())
	case "load":
		os.Exit(benchLoad())
	}
}

// benchServe serves BENCH_DIR over HTTP/1.1 on a loopback port it prints.
func benchServe() int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	fmt.Println("listen", ln.Addr().(*net.TCPAddr).Port)
	err = http.Serve(ln, http.FileServer(http.Dir(os.Getenv("BENCH_DIR"))))
	fmt.Fprintln(os.Stderr, "serve:", err)
	return 1
}

// benchLoad sends BENCH_REQUESTS GETs of BENCH_URL over BENCH_CONNS
// keep-alive connections and prints "done <requests> <elapsed ns>".
func benchLoad() int {
	url := os.Getenv("BENCH_URL")
	total, _ := strconv.Atoi(os.Getenv("BENCH_REQUESTS"))
	conns, _ := strconv.Atoi(os.Getenv("BENCH_CONNS"))
	tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	var failed atomic.Value
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		return err
	}
	// One request per connection first, off the clock: dials are not the
	// steady state being measured.
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			if err := get(); err != nil {
				failed.Store(err)
			}
		})
	}
	wg.Wait()
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				if err := get(); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	fmt.Println("done", total, elapsed.Nanoseconds())
	return 0
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkServerThroughput measures a real HTTP server (Go net/http serving
// a 4 KiB file, in its own cgroup) under keep-alive load from a client
// process outside that cgroup: requests/s with no collector loaded vs the
// collector loaded with the server's cgroup tracked and a consumer running
// as the agent does (Run, and DrainSyscalls every second). The two alternate
// in order over BULKHEAD_BENCH_ROUNDS rounds (default 5) of
// BULKHEAD_BENCH_REQUESTS requests (default 20000) over BULKHEAD_BENCH_CONNS
// connections (default 8); the machine is shared, so medians and spreads are
// reported, and the loss is also taken per adjacent pair. With the collector
// on it reports the sensor process's own CPU (getrusage of this process: the
// load generator and the server are children) per 100k tracked system
// calls/s, and its memory: the maps' declared and kernel-accounted sizes
// and the Go heap it holds. Run with -benchtime 1x (`make bench-sensor`).
func BenchmarkServerThroughput(b *testing.B) {
	requireBPF(b)
	rounds := benchEnvInt("BULKHEAD_BENCH_ROUNDS", 5)
	requests := benchEnvInt("BULKHEAD_BENCH_REQUESTS", 20000)
	conns := benchEnvInt("BULKHEAD_BENCH_CONNS", 8)

	cg := newCgroup(b, "server")
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(strings.Repeat("bulkhead\n", 455)), 0o644); err != nil {
		b.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", startBenchServer(b, cg, dir))
	// load returns the requests/s and the server's CPU time per request (its
	// cgroup's usage_usec, which includes the BPF programs run in its
	// system calls): on a shared machine the first mostly measures waiting
	// for a CPU, the second what the server pays.
	load := func() (rps, cpuPerReq float64) {
		cpu0 := cgroupCPU(b, cg)
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		cmd.Env = append(os.Environ(), benchRoleEnv+"=load", "BENCH_URL="+url,
			"BENCH_REQUESTS="+strconv.Itoa(requests), "BENCH_CONNS="+strconv.Itoa(conns))
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("load: %v: %s", err, stderrOf(err))
		}
		var n, ns int64
		if _, err := fmt.Sscanf(string(out), "done %d %d", &n, &ns); err != nil {
			b.Fatalf("load printed %q: %v", out, err)
		}
		return float64(n) / (float64(ns) / 1e9), float64(cgroupCPU(b, cg)-cpu0) / float64(n)
	}

	type sensorRun struct {
		cpu, wall time.Duration
		calls     uint64
		events    uint64
	}
	var (
		heapDelta         int64
		declared, memlock uint64
	)
	// on runs the load with the collector loaded and the server tracked.
	on := func() (float64, float64, sensorRun) {
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		c := newCollector(b, Options{})
		if err := c.Track(cg.id); err != nil {
			b.Fatal(err)
		}
		declared, memlock = mapSizes(b, c)

		ctx, cancel := context.WithCancel(context.Background())
		var run sensorRun
		var wg sync.WaitGroup
		events := make(chan Event, 256)
		wg.Go(func() { _ = c.Run(ctx, events) })
		wg.Go(func() {
			for {
				select {
				case <-events:
					run.events++
				case <-ctx.Done():
					return
				}
			}
		})
		drain := func() {
			got, err := c.DrainSyscalls()
			if err != nil {
				b.Errorf("drain: %v", err)
				return
			}
			for _, n := range got[cg.id] {
				run.calls += n
			}
		}
		var drainMu sync.Mutex
		wg.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					drainMu.Lock()
					drain()
					drainMu.Unlock()
				case <-ctx.Done():
					return
				}
			}
		})

		cpu0, start := rusageCPU(b), time.Now()
		rps, cpuPerReq := load()
		drainMu.Lock()
		drain() // what the last second counted
		drainMu.Unlock()
		run.cpu, run.wall = rusageCPU(b)-cpu0, time.Since(start)
		cancel()
		wg.Wait()

		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		heapDelta = int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		// Every request is several system calls of the server: a count
		// below the requests means the collector was not tracking it.
		if run.calls < uint64(requests) {
			b.Fatalf("counted %d system calls of the server for %d requests", run.calls, requests)
		}
		return rps, cpuPerReq, run
	}

	load() // warm-up: page cache, connection setup, CPU frequency
	var offRPS, onRPS, pairLoss, offCPU, onCPU, cpuLoss, cpuPer100k []float64
	for b.Loop() {
		for i := range rounds {
			var off, with, offC, onC float64
			var run sensorRun
			if i%2 == 0 {
				off, offC = load()
				with, onC, run = on()
			} else {
				with, onC, run = on()
				off, offC = load()
			}
			offRPS, onRPS = append(offRPS, off), append(onRPS, with)
			offCPU, onCPU = append(offCPU, offC), append(onCPU, onC)
			pairLoss = append(pairLoss, 100*(off-with)/off)
			// A CPU-bound server's capacity is 1 / CPU per request.
			cpuLoss = append(cpuLoss, 100*(1-offC/onC))
			callsPerSec := float64(run.calls) / run.wall.Seconds()
			// Millicores of the sensor per 100k tracked calls/s.
			cpuPer100k = append(cpuPer100k, 1000*run.cpu.Seconds()/run.wall.Seconds()*1e5/callsPerSec)
			b.Logf("round %d (%s first): off %.0f req/s %.1f server-µs/req, on %.0f req/s %.1f server-µs/req; sensor %v CPU in %v for %d server calls (%.0f calls/s), %d events",
				i+1, map[bool]string{true: "off", false: "on"}[i%2 == 0], off, offC, with, onC,
				run.cpu.Round(time.Millisecond), run.wall.Round(time.Millisecond), run.calls, callsPerSec, run.events)
		}
	}
	offMed, onMed := median(offRPS), median(onRPS)
	offC, onC := median(offCPU), median(onCPU)
	b.ReportMetric(offMed, "off-req/s")
	b.ReportMetric(onMed, "on-req/s")
	b.ReportMetric(median(pairLoss), "wall-loss-%")
	b.ReportMetric(offC, "off-server-µs/req")
	b.ReportMetric(onC, "on-server-µs/req")
	b.ReportMetric(median(cpuLoss), "cpu-loss-%")
	b.ReportMetric(median(cpuPer100k), "sensor-millicores/100k-calls/s")
	b.ReportMetric(float64(declared), "maps-declared-B")
	b.ReportMetric(float64(memlock), "maps-memlock-B")
	b.ReportMetric(float64(heapDelta), "go-heap-delta-B")
	b.Logf("%d rounds of %d requests on %d keep-alive connections, order alternating:", rounds, requests, conns)
	b.Logf("  requests/s: off median %.0f [%.0f..%.0f], on median %.0f [%.0f..%.0f]; loss per round median %.2f%% [%.2f..%.2f]",
		offMed, slices.Min(offRPS), slices.Max(offRPS), onMed, slices.Min(onRPS), slices.Max(onRPS), median(pairLoss), slices.Min(pairLoss), slices.Max(pairLoss))
	b.Logf("  server CPU µs/request: off median %.2f [%.2f..%.2f], on median %.2f [%.2f..%.2f]; capacity loss per round median %.2f%% [%.2f..%.2f] (goal <= 3%%)",
		offC, slices.Min(offCPU), slices.Max(offCPU), onC, slices.Min(onCPU), slices.Max(onCPU), median(cpuLoss), slices.Min(cpuLoss), slices.Max(cpuLoss))
	b.Logf("  sensor CPU (collector + consumer: Run, DrainSyscalls every 1s): median %.2f millicores per 100k tracked calls/s [%.2f..%.2f]",
		median(cpuPer100k), slices.Min(cpuPer100k), slices.Max(cpuPer100k))
	b.Logf("  sensor memory: maps %d B declared (max_entries x (key+value); ring buffer bytes; per-CPU values x %d CPUs), %d B kernel memlock; Go heap held %+d B",
		declared, runtime.NumCPU(), memlock, heapDelta)
}

// cgroupCPU is the cgroup's CPU time (cpu.stat usage_usec, present in every
// cgroup v2 directory without the cpu controller) in µs.
func cgroupCPU(b *testing.B, cg testCgroup) uint64 {
	data, err := os.ReadFile(filepath.Join(cg.path, "cpu.stat"))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				b.Fatalf("cpu.stat %q: %v", line, err)
			}
			return n
		}
	}
	b.Fatalf("no usage_usec in %s/cpu.stat", cg.path)
	return 0
}

// startBenchServer starts the file server inside cg and returns its port.
func startBenchServer(b *testing.B, cg testCgroup, dir string) int {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), benchRoleEnv+"=serve", "BENCH_DIR="+dir)
	cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		b.Fatalf("server printed nothing: %v", sc.Err())
	}
	var port int
	if _, err := fmt.Sscanf(sc.Text(), "listen %d", &port); err != nil {
		b.Fatalf("server printed %q: %v", sc.Text(), err)
	}
	return port
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func rusageCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mapSizes returns the collector's maps' declared size (max_entries times
// key and value size; a ring buffer's max_entries is its size in bytes;
// per-CPU values once per possible CPU) and what the kernel charges for them
// (memlock in the map's fdinfo).
func mapSizes(b *testing.B, c *Collector) (declared, memlock uint64) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		b.Fatal(err)
	}
	m := c.objs.collectMaps
	for _, mp := range []*ebpf.Map{m.Events, m.Histories, m.Lost, m.Tracked, m.Trigrams, m.UdpSeen} {
		switch {
		case mp.Type() == ebpf.RingBuf:
			declared += uint64(mp.MaxEntries())
		case mp.Type() == ebpf.PerCPUArray || mp.Type() == ebpf.PerCPUHash || mp.Type() == ebpf.LRUCPUHash:
			declared += uint64(mp.MaxEntries()) * uint64(mp.KeySize()+mp.ValueSize()*uint32(cpus))
		default:
			declared += uint64(mp.MaxEntries()) * uint64(mp.KeySize()+mp.ValueSize())
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", mp.FD()))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "memlock:"); ok {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					b.Fatalf("fdinfo memlock %q: %v", v, err)
				}
				memlock += n
			}
		}
	}
	return declared, memlock
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
