package collect

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkSyscallOverhead measures ns per getppid (a real system call, no
// vDSO) from this process in its own cgroup: without the collector, with it
// attached but the cgroup untracked (the cost every other task on the node
// pays), and tracked (trigram counted in the kernel). Added cost = difference
// to "detached"; "hook-only" is an empty program on the same tracepoint.
// Run it with `make bench-sensor`.
func BenchmarkSyscallOverhead(b *testing.B) {
	requireBPF(b)
	cg := newCgroup(b, "bench")
	enterCgroup(b, cg)
	getppid := func(b *testing.B, prog *ebpf.Program) {
		// Thread CPU time as well as wall time: on a shared, loaded machine
		// wall time mostly measures waiting for a CPU.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := threadCPU(b)
		for b.Loop() {
			_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		b.ReportMetric(float64(threadCPU(b)-start)/float64(b.N), "cpu-ns/call")
		if prog != nil {
			b.ReportMetric(progNsPerRun(b, prog), "prog-ns/run")
		}
	}
	b.Run("detached", func(b *testing.B) { getppid(b, nil) })
	// The cost of any program on sys_enter: the kernel's syscall-tracepoint
	// path, before the collector's own instructions.
	b.Run("hook-only", func(b *testing.B) {
		p, detach := emptySysEnter(b)
		defer detach()
		getppid(b, p)
	})
	b.Run("attached-untracked", func(b *testing.B) {
		c := newCollector(b, Options{})
		getppid(b, c.objs.SysEnter)
	})
	b.Run("attached-tracked", func(b *testing.B) {
		c := newCollector(b, Options{})
		if err := c.Track(cg.id); err != nil {
			b.Fatal(err)
		}
		getppid(b, c.objs.SysEnter)
		b.StopTimer()
		got, err := c.DrainSyscalls()
		if err != nil {
			b.Fatal(err)
		}
		var n uint64
		for _, v := range got[cg.id] {
			n += v
		}
		// Every call must have been counted, or the number measures nothing.
		if n < uint64(b.N) {
			b.Fatalf("counted %d trigrams for %d calls", n, b.N)
		}
	})
	// The product's default: sys_enter in its duty cycle at the default
	// budget, tracked. A getppid loop is the heaviest system-call load
	// there is, so the duty goes to its floor; the loop runs for whole duty
	// periods (after one to settle), so the ns per call is the average over
	// attached and detached windows. b.N is not used: the time is, and
	// ns/op is the wall time per call.
	b.Run("duty-tracked", func(b *testing.B) {
		c := newCollector(b, Options{Duty: DutyConfig{Budget: DefaultSyscallCPUBudget}})
		if err := c.Track(cg.id); err != nil {
			b.Fatal(err)
		}
		cfg, err := DutyConfig{Budget: DefaultSyscallCPUBudget}.withDefaults()
		if err != nil {
			b.Fatal(err)
		}
		period := cfg.Period
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		loopFor := func(d time.Duration) (calls int) {
			end := time.Now().Add(d)
			for time.Now().Before(end) {
				for range 10_000 {
					_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
				}
				calls += 10_000
			}
			return calls
		}
		loopFor(period) // the duty settles under this load
		start, t0 := threadCPU(b), time.Now()
		n := loopFor(4 * period)
		b.ReportMetric(float64(threadCPU(b)-start)/float64(n), "cpu-ns/call")
		b.ReportMetric(float64(time.Since(t0))/float64(n), "ns/op")
		st := c.SyscallDuty()
		if st.Err != "" {
			b.Fatal(st.Err)
		}
		b.ReportMetric(st.Ratio, "duty-ratio")
	})
}

// enterCgroup moves this whole process into cg until the benchmark ends.
func enterCgroup(b *testing.B, cg testCgroup) {
	b.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	var home string
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			home = filepath.Join(cgroup2Root(b), p)
		}
	}
	if home == "" {
		b.Fatalf("no cgroup v2 line in /proc/self/cgroup: %q", data)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(cg.path, "cgroup.procs"), pid, 0); err != nil {
		b.Fatalf("enter cgroup: %v", err)
	}
	b.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), pid, 0); err != nil {
			b.Errorf("leave cgroup for %s: %v", home, err)
		}
	})
}

func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}

// progNsPerRun runs getppid again, untimed, with the kernel's run-time
// statistics on (BPF_ENABLE_STATS, only while this holds the fd) and returns
// the sys_enter program's own ns per run. The statistics' two clock reads
// are included: "hook-only" shows how much that is.
func progNsPerRun(b *testing.B, prog *ebpf.Program) float64 {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time stats: %v", err)
	}
	defer stats.Close()
	before, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	for range 200_000 {
		_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
	}
	after, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		b.Fatal("the sys_enter program did not run")
	}
	return float64(after.Runtime-before.Runtime) / float64(runs)
}

// emptySysEnter attaches a program that does nothing to sys_enter: what any
// program there costs, before its own instructions.
func emptySysEnter(b *testing.B) (*ebpf.Program, func()) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sys_enter", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: p})
	if err != nil {
		_ = p.Close()
		b.Fatal(err)
	}
	return p, func() {
		if err := l.Close(); err != nil {
			b.Error(err)
		}
		if err := p.Close(); err != nil {
			b.Error(err)
		}
	}
}
