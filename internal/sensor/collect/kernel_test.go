package collect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// runCollector runs c.Run into a sink until the test ends.
func runCollector(t *testing.T, c *Collector) *sink {
	t.Helper()
	s := &sink{}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Event, 256)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ch) }()
	go func() {
		for e := range ch {
			s.add(e)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		close(ch)
	})
	return s
}

func isExecOf(cg uint64, binary string) func(Event) bool {
	return func(e Event) bool { return e.CgroupID == cg && e.Exec != nil && e.Exec.Binary == binary }
}

func hasSyscall(m map[Trigram]uint64, nr uint16) bool {
	for tri, n := range m {
		if n > 0 && slices.Contains(tri[:], nr) {
			return true
		}
	}
	return false
}

func TestCollectorOnKernel(t *testing.T) {
	requireBPF(t)
	c := newCollector(t, Options{})
	tracked := newCgroup(t, "tracked")
	sibling := newCgroup(t, "sibling")
	if err := c.Track(tracked.id); err != nil {
		t.Fatal(err)
	}
	s := runCollector(t, c)
	if _, err := c.DrainSyscalls(); err != nil { // start from zero
		t.Fatal(err)
	}

	// The untracked sibling runs the same workload first; the tracked
	// cgroup's records arriving afterwards prove the sibling's were not
	// merely late.
	script := "/bin/cat /etc/hostname >/dev/null; /bin/true"
	sibling.run(t, nil, "/bin/sh", "-c", script)
	tracked.run(t, nil, "/bin/sh", "-c", script)

	t.Run("exec", func(t *testing.T) {
		cat := s.waitFor(t, "exec of /bin/cat", isExecOf(tracked.id, "/bin/cat")).Exec
		if cat.Parent != "sh" {
			t.Errorf("parent comm = %q, want sh", cat.Parent)
		}
		if want := []string{"/bin/cat", "/etc/hostname"}; !slices.Equal(cat.Args, want) || cat.ArgsTruncated {
			t.Errorf("args = %q (truncated %v), want %q", cat.Args, cat.ArgsTruncated, want)
		}
		if cat.PID == 0 || cat.PPID == 0 || cat.PID == cat.PPID || cat.UID != 0 {
			t.Errorf("pid/ppid/uid = %d/%d/%d", cat.PID, cat.PPID, cat.UID)
		}
		sh := s.waitFor(t, "exec of /bin/sh", isExecOf(tracked.id, "/bin/sh")).Exec
		if sh.PID != cat.PPID {
			t.Errorf("cat's parent pid %d is not sh's pid %d", cat.PPID, sh.PID)
		}
		if want := []string{"/bin/sh", "-c", script}; !slices.Equal(sh.Args, want) {
			t.Errorf("sh args = %q, want %q", sh.Args, want)
		}
		if self := filepath.Base(os.Args[0]); !strings.HasPrefix(self, sh.Parent) {
			t.Errorf("sh's parent comm = %q, want a prefix of the test binary %q", sh.Parent, self)
		}
	})

	t.Run("syscall trigrams", func(t *testing.T) {
		// The kernel's map itself, before DrainSyscalls filters by the
		// tracked set: the sibling must not be in it.
		var (
			k collectTrigramKey
			v uint64
		)
		for it := c.objs.Trigrams.Iterate(); it.Next(&k, &v); {
			if k.Cgroup == sibling.id {
				t.Fatalf("the kernel counted trigram %s for the untracked sibling", trigramFromKey(k.Trigram))
			}
		}
		for _, table := range []*ebpf.Map{c.objs.Fast0, c.objs.Fast1} {
			var (
				i     uint32
				slots []collectTrigramSlot
			)
			for it := table.Iterate(); it.Next(&i, &slots); {
				for _, s := range slots {
					if s.Cgroup == sibling.id {
						t.Fatalf("the kernel counted trigram %s for the untracked sibling", trigramFromKey(s.Trigram))
					}
				}
			}
		}
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got[sibling.id]; ok {
			t.Errorf("untracked sibling cgroup has counters: %d trigrams", len(got[sibling.id]))
		}
		m := got[tracked.id]
		for _, nr := range []uint16{unix.SYS_EXECVE, unix.SYS_OPENAT, unix.SYS_READ, unix.SYS_CLOSE, unix.SYS_EXIT_GROUP} {
			if !hasSyscall(m, nr) {
				t.Errorf("no trigram with %s among %d", SyscallName(nr), len(m))
			}
		}
		again, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(again[tracked.id]); n != 0 {
			t.Errorf("second drain with nothing run: %d trigrams, want 0 (drain resets)", n)
		}
		if st := c.Stats(); st.Trigrams < uint64(len(m)) {
			t.Errorf("Stats.Trigrams = %d, want >= %d", st.Trigrams, len(m))
		}
	})

	for _, fam := range []struct {
		v      string
		family int
		addr   netip.Addr
	}{
		{"4", unix.AF_INET, netip.MustParseAddr("127.0.0.1")},
		{"6", unix.AF_INET6, netip.IPv6Loopback()},
	} {
		t.Run("connections IPv"+fam.v, func(t *testing.T) {
			testConnections(t, s, tracked, fam.v, fam.family, fam.addr)
		})
	}

	t.Run("untracked sibling produced nothing", func(t *testing.T) {
		for _, e := range s.snapshot() {
			if e.CgroupID == sibling.id {
				t.Errorf("event from the untracked sibling cgroup: %s", describe([]Event{e}))
			}
		}
	})

	t.Run("untrack stops collection", func(t *testing.T) {
		other := newCgroup(t, "other")
		if err := c.Track(other.id); err != nil {
			t.Fatal(err)
		}
		if err := c.Untrack(tracked.id); err != nil {
			t.Fatal(err)
		}
		before := len(s.snapshot())
		tracked.run(t, nil, "/bin/sh", "-c", "/bin/cat /etc/hostname >/dev/null; /bin/true")
		other.run(t, nil, "/bin/sh", "-c", "/bin/true; /bin/true")
		s.waitFor(t, "exec in the other tracked cgroup", isExecOf(other.id, "/bin/true"))
		for _, e := range s.snapshot()[before:] {
			if e.CgroupID == tracked.id {
				t.Errorf("event after Untrack: %s", describe([]Event{e}))
			}
		}
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(got[tracked.id]); n != 0 {
			t.Errorf("%d trigrams after Untrack", n)
		}
		if len(got[other.id]) == 0 {
			t.Error("no trigrams for the other tracked cgroup")
		}
	})

	if st := c.Stats(); st.Events == 0 || st.Malformed != 0 || st.Lost != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestRunCountsMalformed writes garbage into the real ring buffer with a
// small socket-filter program and checks Run skips and counts it.
func TestRunCountsMalformed(t *testing.T) {
	requireBPF(t)
	c := newCollector(t, Options{})
	s := runCollector(t, c)

	// output sends the first size bytes at fp-24 to the collector's ring buffer.
	output := func(size int32) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, c.objs.Events.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -24),
			asm.Mov.Imm(asm.R3, size),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnRingbufOutput.Call(),
		}
	}
	insns := slices.Concat(
		asm.Instructions{
			// 24 bytes at fp-24: a header with record type 99.
			asm.Mov.Imm(asm.R1, 99),
			asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		},
		output(hdrSize), // unknown type
		output(8),       // shorter than a header
		asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("load the garbage writer: %v", err)
	}
	defer prog.Close()
	if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Malformed < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.Malformed != 2 || st.Events != 0 {
		t.Errorf("stats = %+v, want 2 malformed and no events", st)
	}
	if evs := s.snapshot(); len(evs) != 0 {
		t.Errorf("garbage delivered as events: %s", describe(evs))
	}
}

func TestCloseDetaches(t *testing.T) {
	requireBPF(t)
	c, err := New(Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ids, err := c.programIDs()
	if err != nil {
		t.Fatal(err)
	}
	if n := linksTo(t, ids); n != len(ids) {
		t.Fatalf("%d links to the collector's programs while attached, want %d", n, len(ids))
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, make(chan Event)) }()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after Close: %v", err)
	}
	if n := linksTo(t, ids); n != 0 {
		t.Errorf("%d links remain after Close", n)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Track(1234); err == nil {
		t.Error("Track after Close succeeded")
	}
}

func linksTo(t *testing.T, progs []ebpf.ProgramID) int {
	t.Helper()
	n := 0
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // gone meanwhile
		}
		if slices.Contains(progs, info.Program) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate links: %v", err)
	}
	return n
}

func TestBadInput(t *testing.T) {
	for _, o := range []Options{
		{RingBufferBytes: 3000},
		{RingBufferBytes: -1},
		{MaxTrigrams: -1},
		{ArgsMax: -2},
		{MaxTracked: -1},
		{UDPInterval: -time.Second},
	} {
		if _, err := New(o); err == nil || errors.As(err, new(*UnavailableError)) {
			t.Errorf("New(%+v) = %v, want an options error", o, err)
		}
	}
	requireBPF(t)
	c := newCollector(t, Options{MaxTracked: 2})
	if err := c.Track(0); err == nil {
		t.Error("Track(0) succeeded")
	}
	for id := uint64(1); id <= 2; id++ {
		if err := c.Track(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Track(3); err == nil || !strings.Contains(err.Error(), "MaxTracked") {
		t.Errorf("Track beyond MaxTracked: %v", err)
	}
	if err := c.Untrack(99); err != nil {
		t.Errorf("Untrack of an untracked cgroup: %v", err)
	}
}

// TestUnprivilegedSaysWhatIsMissing runs New as nobody.
func TestUnprivilegedSaysWhatIsMissing(t *testing.T) {
	requireBPF(t)
	// The test binary must be reachable by uid 65534.
	dir, err := os.MkdirTemp("", "bulkhead-collect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "collect.test")
	copyFile(t, os.Args[0], bin)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=load")
	cmd.SysProcAttr = &unix.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	t.Logf("as uid 65534: %s", out)
	if !strings.Contains(string(out), "missing: permission") {
		t.Errorf("unprivileged New said %q, want it to name the missing permission", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLostCountsFullRingBuffer fills a one-page ring buffer (two exec
// records fit) while nothing reads it.
func TestLostCountsFullRingBuffer(t *testing.T) {
	requireBPF(t)
	c := newCollector(t, Options{RingBufferBytes: os.Getpagesize()})
	cg := newCgroup(t, "lost")
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	cg.run(t, nil, "/bin/sh", "-c", "/bin/true; /bin/true; /bin/true; /bin/true; /bin/true")
	if st := c.Stats(); st.Lost == 0 {
		t.Fatalf("6 execs into a ring buffer for 2: Lost = 0 (%+v)", st)
	}
	s := runCollector(t, c)
	s.waitFor(t, "an exec that fitted", isExecOf(cg.id, "/bin/sh"))
}

// TestVerifierRefusalNamesProgram feeds loadError a real refusal.
func TestVerifierRefusalNamesProgram(t *testing.T) {
	requireBPF(t)
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sys_enter", License: "GPL",
		// Returns an uninitialized register.
		Instructions: asm.Instructions{asm.Mov.Reg(asm.R0, asm.R5), asm.Return()},
	})
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		t.Fatalf("want a verifier error, got %v", err)
	}
	got := loadError(fmt.Errorf("field SysEnter: program sys_enter: %w", err), nil)
	var ue *UnavailableError
	if !errors.As(got, &ue) || ue.Missing != "program sys_enter refused by the verifier" || !strings.Contains(got.Error(), "R5 !read_ok") {
		t.Errorf("loadError = %v", got)
	}
}

// testConnections has a process in cg connect to and send to listeners of
// this test, and listen itself, over loopback of one address family.
func testConnections(t *testing.T, s *sink, cg testCgroup, v string, family int, loopback netip.Addr) {
	host := loopback.String()
	ln, err := net.Listen("tcp"+v, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	udp, err := net.ListenPacket("udp"+v, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcpPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	udpPort := uint16(udp.LocalAddr().(*net.UDPAddr).Port)

	out := cg.run(t, []string{helperEnv + "=net"}, os.Args[0], "-test.run=^$",
		strings.Join([]string{v, host, strconv.Itoa(int(tcpPort)), strconv.Itoa(int(udpPort))}, ","))
	listenPort := parseListenPort(t, out)

	conn := s.waitFor(t, "TCP connect", func(e Event) bool {
		return e.CgroupID == cg.id && e.Conn != nil && !e.Conn.Listen && e.Conn.Protocol == "TCP" && e.Conn.Port == tcpPort
	}).Conn
	if conn.Addr != loopback || conn.Family != family || conn.PID == 0 {
		t.Errorf("TCP connect = %+v", *conn)
	}
	lst := s.waitFor(t, "TCP listen", func(e Event) bool {
		return e.CgroupID == cg.id && e.Conn != nil && e.Conn.Listen && e.Conn.Port == listenPort
	}).Conn
	if lst.Protocol != "TCP" || lst.Addr != loopback || lst.Family != family {
		t.Errorf("listen = %+v", *lst)
	}
	u := s.waitFor(t, "UDP send", func(e Event) bool {
		return e.CgroupID == cg.id && e.Conn != nil && e.Conn.Protocol == "UDP" && e.Conn.Port == udpPort
	}).Conn
	if u.Addr != loopback || u.Listen || u.Family != family {
		t.Errorf("UDP = %+v", *u)
	}
	n := 0
	for _, e := range s.snapshot() {
		if e.Conn != nil && e.Conn.Protocol == "UDP" && e.Conn.Port == udpPort {
			n++
		}
	}
	if n != 1 {
		t.Errorf("3 UDP sends to one destination gave %d events, want 1 (deduplicated)", n)
	}
}

// TestTrackedFilterBothWordHalves tracks cgroups whose filter bits fall in
// the low and the high 32 bits of their word (a truncation there once hid
// half of all cgroups).
func TestTrackedFilterBothWordHalves(t *testing.T) {
	requireBPF(t)
	c := newCollector(t, Options{})
	var low, high *testCgroup
	for i := 0; i < 64 && (low == nil || high == nil); i++ {
		cg := newCgroup(t, "bits"+strconv.Itoa(i))
		if trackedBit(cg.id)%64 < 32 && low == nil {
			low = &cg
		} else if trackedBit(cg.id)%64 >= 32 && high == nil {
			high = &cg
		}
	}
	if low == nil || high == nil {
		t.Fatal("64 cgroups and no bit in both halves: the hash is broken")
	}
	s := runCollector(t, c)
	for _, cg := range []*testCgroup{low, high} {
		if err := c.Track(cg.id); err != nil {
			t.Fatal(err)
		}
		cg.run(t, nil, "/bin/true")
		s.waitFor(t, fmt.Sprintf("exec in cgroup %d (bit %d)", cg.id, trackedBit(cg.id)), isExecOf(cg.id, "/bin/true"))
	}
}

// getppidRun runs the helper's n getppid calls in a row in cg and returns how
// many (getppid, getppid, getppid) trigrams drain counted for cg, draining
// every few milliseconds meanwhile so the counts cross fast-table switches.
func getppidRun(t *testing.T, c *Collector, cg testCgroup, n int) uint64 {
	t.Helper()
	var (
		total uint64
		mu    sync.Mutex
	)
	drain := func() {
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		total += got[cg.id][Trigram{unix.SYS_GETPPID, unix.SYS_GETPPID, unix.SYS_GETPPID}]
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
				drain()
			}
		}
	})
	// No asynchronous preemption: its signal would break the run of calls.
	cg.run(t, []string{helperEnv + "=getppid", "GODEBUG=asyncpreemptoff=1"}, os.Args[0], strconv.Itoa(n))
	close(done)
	wg.Wait()
	drain()
	return total
}

// fastSlotsTaken counts the taken slots of both fast tables over all CPUs.
func fastSlotsTaken(t *testing.T, c *Collector) int {
	t.Helper()
	taken := 0
	for _, table := range []*ebpf.Map{c.objs.Fast0, c.objs.Fast1} {
		var (
			k uint32
			v []collectTrigramSlot
		)
		it := table.Iterate()
		for it.Next(&k, &v) {
			for _, s := range v {
				if s.Cgroup != 0 {
					taken++
				}
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return taken
}

// The counts of a run of calls arrive whole across many drains (each one
// switches the kernel's per-CPU fast tables) and never twice, and the same
// when every fast slot is taken and the kernel counts in the fallback map.
func TestTrigramCountsAcrossDrains(t *testing.T) {
	requireBPF(t)
	const n = 200_000
	c := newCollector(t, Options{})
	cg := newCgroup(t, "counts")
	if err := c.Track(cg.id); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, got uint64) {
		// n calls in a row make n-2 trigrams of them; a drain may lose an
		// increment that races with it, and the Go runtime may interleave
		// a call of its own now and then.
		if got > n-2 || got < (n-2)*99/100 {
			t.Errorf("counted %d (getppid, getppid, getppid) for %d calls in a row, want %d (at least 99%%)", got, n, n-2)
		}
	}
	t.Run("fast tables", func(t *testing.T) {
		check(t, getppidRun(t, c, cg, n))
	})
	t.Run("fallback map", func(t *testing.T) {
		// Take every slot of both fast tables on every CPU for a cgroup
		// that is not tracked: the kernel must count in `trigrams`.
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			t.Fatal(err)
		}
		const foreign = 1 << 62
		full := make([]collectTrigramSlot, cpus)
		for i := range full {
			full[i] = collectTrigramSlot{Cgroup: foreign, Trigram: uint64(i), Count: 1}
		}
		// Between the switches of getppidRun's drains the tables are
		// taken again; drains here stop so that they stay taken.
		for _, table := range []*ebpf.Map{c.objs.Fast0, c.objs.Fast1} {
			for i := range uint32(fastSlots) {
				if err := table.Update(i, full, ebpf.UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
		}
		cg.run(t, []string{helperEnv + "=getppid", "GODEBUG=asyncpreemptoff=1"}, os.Args[0], strconv.Itoa(n))
		var inMap uint64
		var (
			k collectTrigramKey
			v uint64
		)
		for it := c.objs.Trigrams.Iterate(); it.Next(&k, &v); {
			if k.Cgroup == cg.id && trigramFromKey(k.Trigram) == (Trigram{unix.SYS_GETPPID, unix.SYS_GETPPID, unix.SYS_GETPPID}) {
				inMap = v
			}
		}
		check(t, inMap)
		got, err := c.DrainSyscalls()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got[foreign]; ok {
			t.Error("drain returned counts of a cgroup that is not tracked")
		}
		check(t, got[cg.id][Trigram{unix.SYS_GETPPID, unix.SYS_GETPPID, unix.SYS_GETPPID}])
		// The second drain frees the other table too.
		if _, err := c.DrainSyscalls(); err != nil {
			t.Fatal(err)
		}
		if taken := fastSlotsTaken(t, c); taken != 0 {
			t.Errorf("%d fast slots still taken after two drains with the server idle", taken)
		}
	})
}
