package collect

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// gapHelper runs the "gap" helper in cg: it makes three getppid, writes
// "a", then waits in a read of stdin until next is called, makes three
// getuid and writes "b".
type gapHelper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   io.ReadCloser
}

func startGap(t *testing.T, cg testCgroup) *gapHelper {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// No asynchronous preemption: its signal would add calls to the thread.
	cmd.Env = append(os.Environ(), helperEnv+"=gap", "GODEBUG=asyncpreemptoff=1")
	cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	g := &gapHelper{cmd: cmd, stdin: stdin, out: out}
	g.expect(t, 'a')
	g.waitInRead(t)
	return g
}

// waitInRead waits until a thread of the helper is in read(0, ...): its
// sys_enter has run.
func (g *gapHelper) waitInRead(t *testing.T) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", g.cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tasks, _ := os.ReadDir(dir)
		for _, task := range tasks {
			b, _ := os.ReadFile(filepath.Join(dir, task.Name(), "syscall"))
			if f := strings.Fields(string(b)); len(f) > 1 && f[0] == strconv.Itoa(unix.SYS_READ) && f[1] == "0x0" {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the gap helper did not block in read(0) within 10s")
}

func (g *gapHelper) expect(t *testing.T, want byte) {
	t.Helper()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(g.out, buf); err != nil || buf[0] != want {
		t.Fatalf("gap helper wrote %q (%v), want %q", buf, err, want)
	}
}

// next lets the helper go on after its read and waits for its end.
func (g *gapHelper) next(t *testing.T) {
	t.Helper()
	if _, err := g.stdin.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	g.expect(t, 'b')
	if err := g.cmd.Wait(); err != nil {
		t.Fatalf("gap helper: %v", err)
	}
}

var (
	acrossGap  = Trigram{unix.SYS_WRITE, unix.SYS_READ, unix.SYS_GETUID}
	acrossGap2 = Trigram{unix.SYS_READ, unix.SYS_GETUID, unix.SYS_GETUID}
	afterGap   = Trigram{unix.SYS_GETUID, unix.SYS_GETUID, unix.SYS_GETUID}
)

// A thread's calls before sys_enter was detached do not form a trigram
// with its calls after it is attached again: the model would learn, and
// score, sequences that no thread made.
func TestNoTrigramAcrossDetachedGap(t *testing.T) {
	requireBPF(t)
	c := newCollector(t, Options{})
	cg := newCgroup(t, "gap")
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	t.Run("without a gap the sequence is joined", func(t *testing.T) {
		// The control: the helper's write, read, getuid are one sequence.
		g := startGap(t, cg)
		g.next(t)
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		if got[cg.id][acrossGap] == 0 || got[cg.id][afterGap] == 0 {
			t.Fatalf("attached throughout: counted %s %d times and %s %d times, want both", acrossGap, got[cg.id][acrossGap], afterGap, got[cg.id][afterGap])
		}
	})
	t.Run("a gap starts a new sequence", func(t *testing.T) {
		g := startGap(t, cg)
		// The helper waits in read, entered while attached.
		if err := c.detachSyscalls(); err != nil {
			t.Fatal(err)
		}
		if err := c.attachSyscalls(); err != nil {
			t.Fatal(err)
		}
		g.next(t)
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		for _, tri := range []Trigram{acrossGap, acrossGap2} {
			if n := got[cg.id][tri]; n != 0 {
				t.Errorf("counted %s %d times across a detached gap, want 0", tri, n)
			}
		}
		if got[cg.id][afterGap] == 0 {
			t.Errorf("the sequence %s after the gap was not counted: %v", afterGap, got[cg.id])
		}
	})
}

// spin makes raw getppid calls on n locked threads until stop is closed.
func spin(n int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 1000 {
					_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
				}
			}
		})
	}
	return &wg
}

// spinBudget is a duty cycle of the given period whose budget is 500k
// untracked calls/s: this machine's background is far below it, spin's two
// threads of getppid far above.
func spinBudget(period time.Duration) DutyConfig {
	const threshold = 500_000
	cfg := DutyConfig{Period: period, Tick: 100 * time.Millisecond, CPUs: runtime.NumCPU()}
	cfg.Budget = 100 * threshold * float64(defaultHookNs+defaultProgramNs) / (float64(cfg.CPUs) * 1e9)
	return cfg
}

func waitDuty(t *testing.T, c *Collector, what string, ok func(DutyState) bool) DutyState {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := c.SyscallDuty()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("duty cycle: no %s within 15s; last state %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Under a syscall-heavy loop the duty cycle detaches sys_enter (no link,
// no program run) part of the time, a sequence made in an on window is
// still counted, and on an idle host it stays attached.
func TestDutyCycleOnKernel(t *testing.T) {
	requireBPF(t)
	cfg := spinBudget(400 * time.Millisecond)
	c := newCollector(t, Options{Duty: cfg})
	cg := newCgroup(t, "duty")
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	info, err := c.objs.SysEnter.Info()
	if err != nil {
		t.Fatal(err)
	}
	sysEnter, _ := info.ID()

	idle := waitDuty(t, c, "measurement", func(s DutyState) bool { return s.Rate > 0 })
	if idle.Ratio != 1 || !idle.Attached {
		t.Fatalf("before the loop: %+v, want always attached (the budget is %v%%)", idle, cfg.Budget)
	}

	stop := make(chan struct{})
	wg := spin(2, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wg.Wait()
		}
	}()
	busy := waitDuty(t, c, "duty below 1 and a detached window", func(s DutyState) bool { return s.Ratio < 1 && !s.Attached })
	t.Logf("under the loop: duty %.2f, %.0f calls/s, estimated cost %.2f%% of the host", busy.Ratio, busy.Rate, 100*busy.Cost)

	// Detached: no link to sys_enter and no run of it, while the loop goes on.
	var all0, all1 uint64
	for tries := 0; ; tries++ {
		waitDuty(t, c, "a detached window", func(s DutyState) bool { return !s.Attached })
		w0 := c.SyscallDuty().Windows
		links := linksTo(t, []ebpf.ProgramID{sysEnter})
		all0, _, _, err = c.callCounts()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		all1, _, _, err = c.callCounts()
		if err != nil {
			t.Fatal(err)
		}
		if s := c.SyscallDuty(); s.Attached || s.Windows != w0 {
			// The window ended meanwhile: look at the next one.
			if tries > 20 {
				t.Fatal("no off window long enough to check")
			}
			continue
		}
		if links != 0 {
			t.Errorf("%d links to sys_enter in an off window, want 0", links)
		}
		if all1 != all0 {
			t.Errorf("sys_enter counted %d calls in an off window, want none", all1-all0)
		}
		break
	}

	// A sequence made in an on window is counted. The helper runs when
	// an on window has begun; on a busy machine it may be scheduled only
	// after the window ended, so a few windows are tried.
	counted := false
	for try := 0; try < 5 && !counted; try++ {
		if _, err := c.DrainSyscalls(); err != nil {
			t.Fatal(err)
		}
		g := startGap(t, cg)
		w := c.SyscallDuty().Windows
		waitDuty(t, c, "the next on window", func(s DutyState) bool { return s.Windows > w && s.Attached })
		g.next(t)
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		counted = got[cg.id][afterGap] > 0
	}
	if !counted {
		t.Errorf("a sequence made at the start of an on window was not counted in 5 windows")
	}

	close(stop)
	wg.Wait()
	stopped = true
	back := waitDuty(t, c, "duty back to 1 when idle", func(s DutyState) bool { return s.Ratio == 1 && s.Attached })
	t.Logf("idle again: duty %.2f, %.0f calls/s", back.Ratio, back.Rate)
	if n := linksTo(t, []ebpf.ProgramID{sysEnter}); n != 1 {
		t.Errorf("%d links to sys_enter when always attached, want 1", n)
	}
}

// An exec of a tracked cgroup ends an off window at once (the attack's next
// calls are seen); the next off window, longer by what was cut short, is not
// ended by one.
func TestDutyOffWindowEndsOnExec(t *testing.T) {
	requireBPF(t)
	// A long period: the off window does not end by itself meanwhile.
	c := newCollector(t, Options{Duty: spinBudget(30 * time.Second)})
	s := runCollector(t, c)
	cg := newCgroup(t, "wake")
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	wg := spin(2, stop)
	defer func() { close(stop); wg.Wait() }()

	waitDuty(t, c, "an off window", func(s DutyState) bool { return s.Ratio < 1 && !s.Attached })
	cg.run(t, nil, "/bin/true")
	s.waitFor(t, "exec of /bin/true", isExecOf(cg.id, "/bin/true"))
	woken := waitDuty(t, c, "the off window ended by the exec", func(s DutyState) bool { return s.Woken == 1 && s.Attached })

	// The next off window owes what the first one was cut short by.
	waitDuty(t, c, "the next off window", func(s DutyState) bool { return s.Windows == woken.Windows && !s.Attached })
	before := len(s.snapshot())
	cg.run(t, nil, "/bin/echo")
	s.waitFor(t, "exec of /bin/echo", isExecOf(cg.id, "/bin/echo"))
	if len(s.snapshot()) <= before {
		t.Fatal("no new event")
	}
	time.Sleep(200 * time.Millisecond) // the duty cycle would have woken by now
	if st := c.SyscallDuty(); st.Woken != 1 || st.Attached {
		t.Errorf("an exec ended the off window that repays the last one: %+v", st)
	}
}
