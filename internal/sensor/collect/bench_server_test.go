package collect

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
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
	"github.com/cilium/ebpf/link"
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
// process outside that cgroup, in seven conditions: no collector ("off"); the
// collector loaded with the server's cgroup tracked and a consumer running
// as the agent does, Run and DrainSyscalls every second, sys_enter always
// attached ("tracked", --syscall-cpu-budget=0); the same with sys_enter in
// its duty cycle at the default budget ("duty", the product's default: a
// first load settles the duty, the second is measured); the same with
// sys_enter never attached ("events-only", the duty cycle's floor); loaded but the cgroup not tracked ("untracked", what every other
// task on the node pays); only the sys_enter program attached, tracked
// ("sys_enter-only", to attribute the cost); and an empty program on
// sys_enter with no collector ("hook-only": the floor of this attach point, paid before
// any instruction of the collector). The order rotates over
// BULKHEAD_BENCH_ROUNDS rounds (default 5) of BULKHEAD_BENCH_REQUESTS
// requests (default 20000) on BULKHEAD_BENCH_CONNS connections (default 8);
// BULKHEAD_BENCH_CONDITIONS (e.g. "tracked,duty") runs only those besides
// "off", for more rounds of one comparison in the same time.
// Reported per condition: requests/s and the server's CPU per request (its
// cgroup's usage_usec; on a shared machine wall time mostly measures the
// wait for a CPU, CPU per request what the server pays), each with the loss
// against "off" in the same round, as median [min..max]. With "tracked" it
// reports the sensor process's own CPU (getrusage of this process: the load
// generator and the server are children) per 100k tracked system calls/s,
// and its memory: the maps' declared and kernel-accounted sizes and the Go
// heap it holds. Run with -benchtime 1x (`make bench-sensor`).
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
	// Another process's program on sys_enter (a sensor of another test on
	// a shared machine) puts every task on the slow path in every
	// condition, and hides what detaching ours saves: polled during every
	// load, reported at the end.
	var polls, foreign atomic.Int64
	var roundForeign atomic.Int64 // polls that saw one in this round
	own := &ownPrograms{}
	load := func() (rps, cpuPerReq float64) {
		done := make(chan struct{})
		defer close(done)
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					polls.Add(1)
					if foreignSysEnter(b, own) {
						foreign.Add(1)
						roundForeign.Add(1)
					}
				}
			}
		}()
		cpu0 := cgroupCPU(b, cg)
		cmd := benchCommand(0)
		cmd.Env = append(cmd.Env, benchRoleEnv+"=load", "BENCH_URL="+url,
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

	// A condition is what is loaded while the load runs.
	type condition struct {
		name     string
		collect  bool // collector loaded, consumer running
		track    bool // the server's cgroup tracked
		sysEnter bool // only the sys_enter program attached (attribution)
		hook     bool // an empty program on sys_enter, no collector
		budget   bool // sys_enter in a duty cycle at the default budget
		noSys    bool // sys_enter detached throughout (the duty cycle's floor)
	}
	conds := []condition{
		{name: "off"},
		{name: "tracked", collect: true, track: true},
		// The product's default: sys_enter attached in a duty cycle
		// under heavy system-call load.
		{name: "duty", collect: true, track: true, budget: true},
		{name: "untracked", collect: true},
		// What the duty cycle costs in its off windows: the event
		// programs only.
		{name: "events-only", collect: true, track: true, noSys: true},
		{name: "sys_enter-only", collect: true, track: true, sysEnter: true},
		// The floor of this attach point: what the kernel's syscall
		// tracepoint path costs before any instruction of ours.
		{name: "hook-only", hook: true},
	}
	all := conds
	names := make([]string, len(conds))
	for i, c := range conds {
		names[i] = c.name
	}
	keep, err := pickConditions(names, os.Getenv("BULKHEAD_BENCH_CONDITIONS"))
	if err != nil {
		b.Fatal(err)
	}
	conds = slices.DeleteFunc(slices.Clone(conds), func(c condition) bool { return !keep[c.name] })
	type sensorRun struct {
		cpu, wall     time.Duration
		calls, events uint64
		progNs        float64            // sys_enter's ns per run, when measured
		progTotal     time.Duration      // sys_enter's run time, when measured
		eventProgs    map[string]progRun // the event programs', when measured
		requests      int
		duty          DutyState // at the end of the load, with budget
		attached      float64   // fraction of the load's time sys_enter was attached
	}
	// measureProg turns the kernel's run-time statistics on for one run of
	// with: they add two clock reads to every program run, so the rounds
	// above run without them.
	measureProg := false
	var (
		heapDelta         int64
		declared, memlock uint64
	)
	// with runs the load with the collector loaded as cond says.
	with := func(cond condition) (float64, float64, sensorRun) {
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		opts := Options{}
		if cond.budget {
			opts.Duty = DutyConfig{Budget: DefaultSyscallCPUBudget}
		}
		c := newCollector(b, opts)
		if info, err := c.objs.SysEnter.Info(); err == nil {
			if id, ok := info.ID(); ok {
				own.add(id)
			}
		}
		if cond.sysEnter {
			// Detach all but sys_enter to see what the system-call hook
			// alone costs.
			for _, l := range c.links {
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}
			c.links = nil
		}
		if cond.noSys {
			if err := c.detachSyscalls(); err != nil {
				b.Fatal(err)
			}
		}
		if cond.track {
			if err := c.Track(cg.id); err != nil {
				b.Fatal(err)
			}
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
		var drainMu sync.Mutex
		drain := func() {
			drainMu.Lock()
			defer drainMu.Unlock()
			got, err := c.DrainSyscalls()
			if err != nil {
				b.Errorf("drain: %v", err)
				return
			}
			for _, n := range got[cg.id] {
				run.calls += n
			}
		}
		wg.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					drain()
				case <-ctx.Done():
					return
				}
			}
		})

		var progBefore *ebpf.ProgramStats
		if measureProg {
			stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Fatalf("enable BPF run-time stats: %v", err)
			}
			defer stats.Close()
			if progBefore, err = c.objs.SysEnter.Stats(); err != nil {
				b.Fatal(err)
			}
			run.eventProgs = eventProgStats(b, c, nil)
		}
		if cond.budget {
			// The duty cycle measures the load in its first attached
			// window: settle it under load before the measured run.
			load()
		}
		var attachedFor atomic.Int64
		if cond.budget {
			// Poll whether sys_enter is attached: the time it was over
			// the measured load.
			wg.Go(func() {
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-tick.C:
						if c.SyscallDuty().Attached {
							attachedFor.Add(int64(10 * time.Millisecond))
						}
					case <-ctx.Done():
						return
					}
				}
			})
		}
		cpu0, start := rusageCPU(b), time.Now()
		rps, cpuPerReq := load()
		if cond.budget {
			run.duty = c.SyscallDuty()
			run.attached = float64(attachedFor.Load()) / float64(time.Since(start))
		}
		if progBefore != nil {
			after, err := c.objs.SysEnter.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if runs := after.RunCount - progBefore.RunCount; runs > 0 {
				run.progTotal = after.Runtime - progBefore.Runtime
				run.progNs = float64(run.progTotal) / float64(runs)
			}
			run.eventProgs = eventProgStats(b, c, run.eventProgs)
			run.requests = requests
		}
		drain() // what the last second counted
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
		if cond.track && !cond.noSys && run.calls < uint64(requests) {
			b.Fatalf("%s: counted %d system calls of the server for %d requests", cond.name, run.calls, requests)
		}
		return rps, cpuPerReq, run
	}

	load() // warm-up: page cache, connection setup, CPU frequency
	rps, cpuReq := map[string][]float64{}, map[string][]float64{}
	wallLoss, cpuLoss := map[string][]float64{}, map[string][]float64{}
	// cleanLoss: capacity loss in the rounds no other sys_enter program ran.
	cleanLoss := map[string][]float64{}
	var cpuPer100k, callsPerSec, dutyRatio, attached, hostRate, estCost []float64
	for b.Loop() {
		for i := range rounds {
			roundForeign.Store(0)
			r, c := map[string]float64{}, map[string]float64{}
			// Rotate the order: each condition runs first, second, ... in turn.
			for j := range conds {
				cond := conds[(i+j)%len(conds)]
				if !cond.collect {
					if cond.hook {
						_, detach := emptySysEnter(b)
						r[cond.name], c[cond.name] = load()
						detach()
						continue
					}
					r[cond.name], c[cond.name] = load()
					continue
				}
				var run sensorRun
				r[cond.name], c[cond.name], run = with(cond)
				if cond.budget {
					dutyRatio = append(dutyRatio, run.duty.Ratio)
					attached = append(attached, 100*run.attached)
					hostRate = append(hostRate, run.duty.Rate)
					estCost = append(estCost, 100*run.duty.Cost)
				}
				if cond.name == "tracked" {
					cps := float64(run.calls) / run.wall.Seconds()
					callsPerSec = append(callsPerSec, cps)
					// Millicores of the sensor per 100k tracked calls/s.
					cpuPer100k = append(cpuPer100k, 1000*run.cpu.Seconds()/run.wall.Seconds()*1e5/cps)
				}
			}
			for _, cond := range conds {
				rps[cond.name] = append(rps[cond.name], r[cond.name])
				cpuReq[cond.name] = append(cpuReq[cond.name], c[cond.name])
				wallLoss[cond.name] = append(wallLoss[cond.name], 100*(r["off"]-r[cond.name])/r["off"])
				// A CPU-bound server's capacity is 1 / CPU per request.
				cpuLoss[cond.name] = append(cpuLoss[cond.name], 100*(1-c["off"]/c[cond.name]))
				if roundForeign.Load() == 0 {
					cleanLoss[cond.name] = append(cleanLoss[cond.name], 100*(1-c["off"]/c[cond.name]))
				}
			}
		}
	}
	// The sys_enter program's own time per run under this load, for the
	// tracked server and for every other task (untracked): the part of the
	// loss that the program's instructions cost, measured without the noise
	// of a shared machine's throughput.
	measureProg = true
	progNs := map[string]float64{}
	var perServerCall float64
	for _, cond := range []condition{all[1], all[3]} { // tracked, untracked
		_, _, run := with(cond)
		progNs[cond.name] = run.progNs
		b.ReportMetric(run.progNs, cond.name+"-prog-ns/run")
		if cond.track {
			// Every task's runs over the server's counted calls: an upper
			// bound of what one of its calls costs in the program.
			perServerCall = float64(run.progTotal) / float64(run.calls)
			b.ReportMetric(perServerCall, "tracked-prog-ns/server-call")
		}
	}
	// The event programs' own time per request, with sys_enter never
	// attached: what the "events-only" loss can be made of in the kernel.
	{
		_, cpuPerReq, run := with(all[4]) // events-only
		var total time.Duration
		parts := make([]string, 0, len(run.eventProgs))
		for _, name := range slices.Sorted(maps.Keys(run.eventProgs)) {
			p := run.eventProgs[name]
			total += p.runtime
			parts = append(parts, fmt.Sprintf("%s %.1f runs/req x %.0f ns", name, float64(p.runs)/float64(run.requests), p.nsPerRun()))
		}
		perReq := float64(total) / float64(run.requests)
		b.ReportMetric(perReq, "events-prog-ns/req")
		b.Logf("  event programs (events-only, one more run, BPF run-time statistics on): %s; %.0f ns per request in all, %.2f %% of the server's %.1f µs CPU per request",
			strings.Join(parts, ", "), perReq, 100*perReq/1000/cpuPerReq, cpuPerReq)
	}
	spread := func(xs []float64) string {
		return fmt.Sprintf("%.1f [%.1f..%.1f]", median(xs), slices.Min(xs), slices.Max(xs))
	}
	b.Logf("%d rounds of %d requests on %d keep-alive connections, order rotating; median [min..max]; loss vs off in the same round:", rounds, requests, conns)
	if n := foreign.Load(); n > 0 {
		b.Logf("  CAUTION: another process's sys_enter program was attached in %d of %d polls during the loads: every condition paid the tracepoint's slow path then", n, polls.Load())
		var clean []string
		for _, cond := range conds[1:] {
			if xs := cleanLoss[cond.name]; len(xs) > 0 {
				clean = append(clean, fmt.Sprintf("%s %s", cond.name, spread(xs)))
			}
		}
		b.Logf("  capacity loss %% in the %d of %d rounds without one: %s", len(cleanLoss["off"]), rounds, strings.Join(clean, "; "))
	}
	b.ReportMetric(100*float64(foreign.Load())/float64(max(polls.Load(), 1)), "foreign-sys_enter-%")
	for _, cond := range conds {
		n := cond.name
		b.ReportMetric(median(rps[n]), n+"-req/s")
		b.ReportMetric(median(cpuReq[n]), n+"-server-µs/req")
		if n != "off" {
			b.ReportMetric(median(cpuLoss[n]), n+"-cpu-loss-%")
			b.ReportMetric(median(wallLoss[n]), n+"-wall-loss-%")
		}
		b.Logf("  %-15s req/s %s, loss %% %s; server CPU µs/req %s, capacity loss %% %s",
			n, spread(rps[n]), spread(wallLoss[n]), spread(cpuReq[n]), spread(cpuLoss[n]))
		if n != "off" && len(cpuLoss[n]) > 1 {
			// One round's loss varies by ±10 % or more on a shared
			// machine: the mean's 95 % interval says what the rounds
			// can tell apart.
			m, ci := meanCI(cpuLoss[n])
			b.ReportMetric(m, n+"-cpu-loss-mean-%")
			b.Logf("  %-15s capacity loss %% mean %.1f ± %.1f (95 %% interval, %d rounds)", n, m, ci, len(cpuLoss[n]))
		}
	}
	b.Logf("  sys_enter program ns per run (one more run each, BPF run-time statistics on, all tasks' calls): tracked %.0f, untracked %.0f; with the server tracked, all runs' time per server call %.0f",
		progNs["tracked"], progNs["untracked"], perServerCall)
	if len(dutyRatio) > 0 {
		b.ReportMetric(median(dutyRatio), "duty-ratio")
		b.ReportMetric(median(attached), "duty-attached-%")
		b.Logf("  duty (sys_enter in a duty cycle, --syscall-cpu-budget=%v): duty ratio %s, time attached %% %s over the measured load; host system calls/s while attached %s, estimated cost %% of the host's CPU while attached %s",
			DefaultSyscallCPUBudget, spread(dutyRatio), spread(attached), spread(hostRate), spread(estCost))
	}
	if len(cpuPer100k) == 0 {
		return
	}
	b.ReportMetric(median(cpuPer100k), "sensor-millicores/100k-calls/s")
	b.ReportMetric(float64(declared), "maps-declared-B")
	b.ReportMetric(float64(memlock), "maps-memlock-B")
	b.ReportMetric(float64(heapDelta), "go-heap-delta-B")
	b.Logf("  goal: capacity loss <= 3%% at the default budget (duty); sensor CPU (collector + consumer: Run, DrainSyscalls every 1s) %s millicores per 100k tracked calls/s at %s calls/s",
		spread(cpuPer100k), spread(callsPerSec))
	b.Logf("  sensor memory: maps %d B declared (max_entries x (key+value); ring buffer bytes; per-CPU values x %d CPUs), %d B kernel memlock; Go heap held %+d B",
		declared, runtime.NumCPU(), memlock, heapDelta)
}

// progRun is a program's run count and run time (BPF run-time statistics).
type progRun struct {
	runs    uint64
	runtime time.Duration
}

func (p progRun) nsPerRun() float64 {
	if p.runs == 0 {
		return 0
	}
	return float64(p.runtime) / float64(p.runs)
}

// eventProgStats reads the event programs' statistics; with before, the
// difference since then.
func eventProgStats(b *testing.B, c *Collector, before map[string]progRun) map[string]progRun {
	out := map[string]progRun{}
	for name, p := range map[string]*ebpf.Program{
		"sched_process_exec":  c.objs.SchedProcessExec,
		"inet_sock_set_state": c.objs.InetSockSetState,
		"net_dev_queue":       c.objs.NetDevQueue,
	} {
		st, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		r := progRun{runs: st.RunCount, runtime: st.Runtime}
		if prev, ok := before[name]; ok {
			r.runs -= prev.runs
			r.runtime -= prev.runtime
		}
		out[name] = r
	}
	return out
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

// benchCommand is this test binary as a benchmark process. Unless
// BULKHEAD_BENCH_PIN=0, it runs on CPU cpu alone (taskset, GOMAXPROCS=1):
// the server on one CPU and the load generator on the other, so that the
// scheduler's placement of the two does not change the server's CPU per
// request from one load to the next; the collector's consumer (this
// process) runs where it can, as a sensor on a node does.
func benchCommand(cpu int) *exec.Cmd {
	args := []string{"-test.run=^$", "-test.bench=^$"}
	if os.Getenv("BULKHEAD_BENCH_PIN") != "0" && runtime.NumCPU() >= 2 {
		if ts, err := exec.LookPath("taskset"); err == nil {
			cmd := exec.Command(ts, append([]string{"-c", strconv.Itoa(cpu), os.Args[0]}, args...)...)
			cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
			return cmd
		}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = os.Environ()
	return cmd
}

// startBenchServer starts the file server inside cg and returns its port.
func startBenchServer(b *testing.B, cg testCgroup, dir string) int {
	cmd := benchCommand(1)
	cmd.Env = append(cmd.Env, benchRoleEnv+"=serve", "BENCH_DIR="+dir)
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
	for _, mp := range []*ebpf.Map{m.Events, m.Fast0, m.Fast1, m.Histories, m.Lost, m.Tracked, m.Trigrams, m.UdpSeen} {
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

// meanCI is the mean of xs and the half-width of its normal 95 %
// confidence interval (1.96 standard errors).
func meanCI(xs []float64) (mean, half float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / float64(len(xs)-1))
	return mean, 1.96 * sd / math.Sqrt(float64(len(xs)))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pickConditions parses BULKHEAD_BENCH_CONDITIONS: comma-separated names
// of known conditions; "" keeps all. "off" is always kept: every loss is
// against it.
func pickConditions(known []string, spec string) (map[string]bool, error) {
	keep := map[string]bool{"off": true}
	if strings.TrimSpace(spec) == "" {
		for _, n := range known {
			keep[n] = true
		}
		return keep, nil
	}
	for _, n := range strings.Split(spec, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("BULKHEAD_BENCH_CONDITIONS %q: unknown condition %q, want some of %s", spec, n, strings.Join(known, ","))
		}
		keep[n] = true
	}
	return keep, nil
}

// foreignSysEnter reports whether a program named sys_enter that is not
// this test's collector's is attached (by a link) anywhere on the host.
func foreignSysEnter(b *testing.B, own *ownPrograms) bool {
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			continue
		}
		pi, err := p.Info()
		_ = p.Close()
		if err != nil || pi.Name != "sys_enter" {
			continue
		}
		if own.has(info.Program) {
			continue
		}
		return true
	}
	if err := it.Err(); err != nil {
		b.Logf("iterate links: %v", err)
	}
	return false
}

// ownPrograms are the sys_enter programs of this benchmark's collectors.
type ownPrograms struct {
	mu  sync.Mutex
	ids map[ebpf.ProgramID]bool
}

func (o *ownPrograms) add(id ebpf.ProgramID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ids == nil {
		o.ids = map[ebpf.ProgramID]bool{}
	}
	o.ids[id] = true
}

func (o *ownPrograms) has(id ebpf.ProgramID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ids[id]
}
