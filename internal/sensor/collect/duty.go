package collect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/cilium/ebpf/link"
)

// Why a duty cycle: any program on the raw syscall tracepoint puts every
// task of the host on the syscall slow path (entry and exit work), whatever
// the program does; on a syscall-heavy server that alone costs a few percent
// of its capacity. The event programs (exec, connect/listen, UDP) fire on
// events, not on every call, so they stay attached; sys_enter is attached
// for an on window and detached (its link closed) for an off window, sized
// so that its estimated cost stays under a CPU budget. While attached, it
// counts every call (calls map): that rate times the per-call cost is the
// estimate. An exec or connection of a tracked cgroup ends an off window at
// once (an attack's first step is one of those; its next calls are then
// seen); the time cut short is added to the next off window, which no event
// cuts, so the duty holds on average.

// Default cost model (ns of CPU per call while sys_enter is attached),
// conservative against BenchmarkSyscallOverhead on a 2-core x86_64 VM (Linux
// 6.18): an empty program on sys_enter added 60-90 ns per getppid, the
// collector 85-95 ns for an untracked task and 120-160 ns for a tracked one.
// Heavier calls pay more of the slow path's exit work, hence the margin.
const (
	defaultHookNs    = 150 // the attach point: every call of every task
	defaultProgramNs = 50  // the program for a call of an untracked task
	defaultTrackedNs = 150 // the program's extra for a call of a tracked task
)

// DefaultSyscallCPUBudget is `bulkhead sensor --syscall-cpu-budget`'s
// default (percent of the host's CPU time). The budget bounds the cost to
// all the host's work; one server that does 1/k of it and makes most of
// its calls can lose up to k times the budget of its capacity (about a
// third of the host in BenchmarkServerThroughput: up to 2.25 %). Sampling
// starts above about 37,500 calls/s per CPU of untracked tasks (200 ns
// each); an idle 2-CPU test machine here made 26,000-58,000 in all.
const DefaultSyscallCPUBudget = 0.75

// DutyConfig sizes the duty cycle of sys_enter. The zero value (Budget 0)
// keeps it always attached.
type DutyConfig struct {
	// Budget is the percent of the host's CPU time (all CPUs) that sys_enter
	// may cost by estimate; 0 keeps it always attached. Below the budget, or
	// on an idle host, it stays attached (duty 1).
	Budget float64
	// Period is one on and one off window while sampling. Default 2s: an
	// event of length L is seen with probability about duty + L/Period.
	Period time.Duration
	// Tick is how often the rate is measured while always attached.
	// Default 1s.
	Tick time.Duration
	// MinDuty is the least fraction of time attached, however heavy the
	// load: the syscall model always sees some windows. Default 0.05.
	MinDuty float64
	// HookNs, ProgramNs, TrackedNs are the cost model (ns per call): every
	// task's calls cost HookNs+ProgramNs, a tracked cgroup's TrackedNs more.
	// When the kernel's BPF run-time statistics are on (sysctl
	// kernel.bpf_stats_enabled=1) the program's measured time replaces
	// ProgramNs and TrackedNs. Defaults: see defaultHookNs.
	HookNs, ProgramNs, TrackedNs float64
	// CPUs is the host's CPU count. Default runtime.NumCPU.
	CPUs int
}

func (d DutyConfig) withDefaults() (DutyConfig, error) {
	if math.IsNaN(d.Budget) || d.Budget < 0 || d.Budget > 100 {
		return d, fmt.Errorf("syscall CPU budget %v%%: want 0 (always attached) to 100", d.Budget)
	}
	if d.Period < 0 || d.Tick < 0 || d.MinDuty < 0 || d.MinDuty > 1 || d.HookNs < 0 || d.ProgramNs < 0 || d.TrackedNs < 0 || d.CPUs < 0 {
		return d, fmt.Errorf("duty config %+v: want non-negative values and MinDuty at most 1", d)
	}
	if d.Period == 0 {
		d.Period = 2 * time.Second
	}
	if d.Tick == 0 {
		d.Tick = time.Second
	}
	if d.MinDuty == 0 {
		d.MinDuty = 0.05
	}
	if d.HookNs == 0 {
		d.HookNs = defaultHookNs
	}
	if d.ProgramNs == 0 {
		d.ProgramNs = defaultProgramNs
	}
	if d.TrackedNs == 0 {
		d.TrackedNs = defaultTrackedNs
	}
	if d.CPUs == 0 {
		d.CPUs = runtime.NumCPU()
	}
	return d, nil
}

// CallSample is what sys_enter saw in one attached window.
type CallSample struct {
	Window time.Duration
	// All and Tracked are the calls of every task and of tracked cgroups.
	All, Tracked uint64
	// ProgramTime is sys_enter's own run time in the window when the
	// kernel's run-time statistics were on throughout, else 0.
	ProgramTime time.Duration
}

// Cost is the estimated fraction of the host's CPU time that sys_enter
// costs while attached, from what it saw in s.
func (d DutyConfig) Cost(s CallSample) float64 {
	if s.Window <= 0 || d.CPUs <= 0 {
		return 0
	}
	ns := float64(s.All) * d.HookNs
	if s.ProgramTime > 0 {
		ns += float64(s.ProgramTime.Nanoseconds())
	} else {
		ns += float64(s.All)*d.ProgramNs + float64(s.Tracked)*d.TrackedNs
	}
	return ns / (float64(d.CPUs) * float64(s.Window.Nanoseconds()))
}

// Duty is the fraction of time sys_enter may be attached after a window in
// which it saw s: 1 when its cost fits the budget (or there is no budget),
// else budget/cost, at least MinDuty.
func (d DutyConfig) Duty(s CallSample) float64 {
	if d.Budget <= 0 {
		return 1
	}
	cost := d.Cost(s)
	if cost <= d.Budget/100 {
		return 1
	}
	return max(d.MinDuty, d.Budget/100/cost)
}

// Windows are the next on and off windows for duty: always on (off 0, on
// one Tick) at 1, else on+off = Period with on/Period = duty.
func (d DutyConfig) Windows(duty float64) (on, off time.Duration) {
	if duty >= 1 {
		return d.Tick, 0
	}
	duty = max(duty, d.MinDuty)
	on = time.Duration(duty * float64(d.Period))
	return on, d.Period - on
}

// DutyState is the duty cycle as last measured.
type DutyState struct {
	// Ratio is the fraction of time sys_enter is attached (1: always).
	Ratio float64
	// Rate is the host's system calls per second in the last attached
	// window, Cost the estimated CPU fraction of sys_enter while attached.
	Rate, Cost float64
	// Attached says whether sys_enter is attached now.
	Attached bool
	// Windows counts completed off windows since New; Woken those that an
	// exec or connection of a tracked cgroup ended early.
	Windows, Woken uint64
	// Err is the last failure to attach sys_enter again, "" if none.
	Err string
}

// SyscallDuty returns the duty cycle's state.
func (c *Collector) SyscallDuty() DutyState {
	c.dutyMu.Lock()
	defer c.dutyMu.Unlock()
	return c.duty
}

func (c *Collector) setDuty(f func(*DutyState)) {
	c.dutyMu.Lock()
	f(&c.duty)
	c.dutyMu.Unlock()
}

// attachSyscalls attaches sys_enter if it is not; the calls each thread
// made before are forgotten (sys_epoch).
func (c *Collector) attachSyscalls() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collect: collector closed")
	}
	if c.sysLink != nil {
		return nil
	}
	c.sysEpoch++
	if err := c.objs.SysEpoch.Set(c.sysEpoch); err != nil {
		return fmt.Errorf("collect: set sys_epoch: %w", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: c.objs.SysEnter})
	if err != nil {
		return err
	}
	c.sysLink = l
	c.setDuty(func(s *DutyState) { s.Attached = true })
	return nil
}

// detachSyscalls closes sys_enter's link: no task pays for the tracepoint.
func (c *Collector) detachSyscalls() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sysLink == nil {
		return nil
	}
	err := c.sysLink.Close()
	c.sysLink = nil
	c.setDuty(func(s *DutyState) { s.Attached = false })
	return err
}

// callCounts sums the calls map over CPUs, and reads sys_enter's run time
// (zero when the kernel's statistics are off).
func (c *Collector) callCounts() (all, tracked uint64, progTime time.Duration, err error) {
	var perCPU []collectCallCounts
	if err := c.objs.Calls.Lookup(uint32(0), &perCPU); err != nil {
		return 0, 0, 0, fmt.Errorf("collect: read call counts: %w", err)
	}
	for _, v := range perCPU {
		all += v.All
		tracked += v.Tracked
	}
	if st, err := c.objs.SysEnter.Stats(); err == nil {
		progTime = st.Runtime
	}
	return all, tracked, progTime, nil
}

// runDuty attaches and detaches sys_enter by cfg until ctx ends; sys_enter
// is attached when it returns (unless the collector is closed).
func (c *Collector) runDuty(ctx context.Context, cfg DutyConfig) {
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	on := cfg.Tick
	var debt time.Duration // of an off window an event cut short
	for {
		if err := c.attachSyscalls(); err != nil {
			c.setDuty(func(s *DutyState) { s.Err = err.Error() })
			if !sleep(cfg.Tick) {
				return
			}
			continue
		}
		all0, tr0, rt0, err0 := c.callCounts()
		t0 := time.Now()
		if !sleep(on) {
			return
		}
		all1, tr1, rt1, err1 := c.callCounts()
		if err := errors.Join(err0, err1); err != nil {
			c.setDuty(func(s *DutyState) { s.Err = err.Error() })
			on = cfg.Tick
			continue
		}
		sample := CallSample{Window: time.Since(t0), All: all1 - all0, Tracked: tr1 - tr0}
		if rt0 > 0 && rt1 > rt0 {
			sample.ProgramTime = rt1 - rt0
		}
		duty := cfg.Duty(sample)
		var off time.Duration
		on, off = cfg.Windows(duty)
		c.setDuty(func(s *DutyState) {
			s.Ratio, s.Cost, s.Err = duty, cfg.Cost(sample), ""
			s.Rate = float64(sample.All) / sample.Window.Seconds()
		})
		if off == 0 {
			continue
		}
		if err := c.detachSyscalls(); err != nil {
			c.setDuty(func(s *DutyState) { s.Err = err.Error() })
		}
		wakeable := debt == 0
		off += min(debt, cfg.Period)
		debt = 0
		select { // an event of the on window does not end this one
		case <-c.wake:
		default:
		}
		start := time.Now()
		var wake <-chan struct{} // nil: not wakeable
		if wakeable {
			wake = c.wake
		}
		t := time.NewTimer(off)
		woken := false
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake:
			t.Stop()
			woken = true
			debt = off - time.Since(start)
		}
		c.setDuty(func(s *DutyState) {
			s.Windows++
			if woken {
				s.Woken++
			}
		})
	}
}
