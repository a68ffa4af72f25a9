package enforce

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkSiblingOverhead shows what an isolation costs the pods that are
// not isolated: this process, in a sibling cgroup B, runs a getppid loop,
// a TCP connect+send+close loop, a UDP sendto loop and a UDP connect loop
// on loopback while cgroup A has nothing attached, is isolated (Isolate),
// has an empty program on each of Isolate's attach types (the kernel's own
// hook cost, paid host-wide once any cgroup has such a program, apart from
// the enforcer's programs), or has an empty program on each sock_addr
// attach type earlier versions used (cgroup/connect4/6, sendmsg4/6: what
// they cost every pod). The states rotate in order over
// BULKHEAD_BENCH_ROUNDS rounds (default 6). Each state checks that no
// program is attached to B or effective on it (BPF_F_QUERY_EFFECTIVE, which
// includes what ancestors pass down). Costs are the loop thread's CPU time
// per operation (on a shared machine wall time measures the wait for a
// CPU); the TCP and UDP paths include the loopback receive, which runs in
// the sender's context. Run with -benchtime 1x (`make bench-sensor`).
func BenchmarkSiblingOverhead(b *testing.B) {
	pinDir := requireKernel(b)
	e := newEnforcer(b, pinDir)
	isolated := newCgroup(b, "isolated")
	sibling := newCgroup(b, "sibling")
	rounds := 6
	if n, err := strconv.Atoi(os.Getenv("BULKHEAD_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	enterCgroup(b, sibling)

	// The peers are in B as well: both ends of every connection are the
	// sibling's.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { udp.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := udp.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	tcpAddr := sockaddr(ln.Addr().(*net.TCPAddr).AddrPort().Port())
	udpAddr := sockaddr(udp.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	payload := make([]byte, 64)

	ops := []struct {
		name string
		n    int
		do   func() error
	}{
		{"getppid", 1_000_000, func() error { _, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0); return nil }},
		{"tcp-connect-send-close", 10_000, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			// Close with a reset: thousands of connections per round would
			// otherwise fill the ephemeral ports with TIME_WAIT.
			if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
				return err
			}
			// Blocking connect on loopback: the handshake completes in this call.
			if err := unix.Connect(fd, tcpAddr); err != nil {
				return err
			}
			_, err = unix.Write(fd, payload)
			return err
		}},
		{"udp-sendto", 50_000, nil},
		{"udp-connect", 50_000, nil},
	}
	ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(ufd) })
	ops[2].do = func() error { return unix.Sendto(ufd, payload, 0, udpAddr) }
	// connect(2) on a UDP socket sends nothing; connecting again to the
	// same address is allowed, so one socket serves every iteration.
	cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(cfd) })
	ops[3].do = func() error { return unix.Connect(cfd, udpAddr) }

	// measure runs op n times on one OS thread and returns its CPU ns per op.
	measure := func(name string, n int, do func() error) float64 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := threadCPU(b)
		for range n {
			if err := do(); err != nil {
				b.Fatalf("%s: %v", name, err)
			}
		}
		return float64(threadCPU(b)-start) / float64(n)
	}
	for _, op := range ops {
		measure(op.name, op.n/10, op.do) // warm-up
	}

	// States of cgroup A while B's loops run: nothing attached; isolated
	// by Isolate; to tell the kernel's hook from the enforcer's programs,
	// an empty program (returns "allow") on each of Isolate's attach types;
	// and, for what earlier versions cost, an empty program on each
	// sock_addr attach type they used (cgroup/connect4/6, sendmsg4/6).
	states := []string{"none", "A-isolated", "A-empty-skb", "A-empty-sockaddr"}
	enter := func(state string) (leave func()) {
		switch state {
		case "A-isolated":
			res, err := e.Isolate(isolated, Options{})
			if err != nil {
				b.Fatal(err)
			}
			if n := len(attached(b, isolated)); n != len(programs) {
				b.Fatalf("isolated cgroup has %d programs attached, want %d (%v)", n, len(programs), res.Programs)
			}
			return func() {
				if err := e.Release(isolated); err != nil {
					b.Fatal(err)
				}
			}
		case "A-empty-skb":
			return attachEmpty(b, isolated, programs)
		case "A-empty-sockaddr":
			return attachEmpty(b, isolated, legacyPrograms)
		}
		if ids := attached(b, isolated); len(ids) != 0 {
			b.Fatalf("no isolation, yet cgroup A has programs %v", ids)
		}
		return func() {}
	}

	cost := map[string]map[string][]float64{} // op -> state -> ns/op per round
	diff := map[string]map[string][]float64{} // op -> state -> % vs none in the same round
	for b.Loop() {
		for i := range rounds {
			got := map[string]map[string]float64{}
			// Rotate the order: each state runs first, second, ... in turn.
			for j := range states {
				state := states[(i+j)%len(states)]
				leave := enter(state)
				if ids := attached(b, sibling); len(ids) != 0 {
					b.Fatalf("%s: programs %v attached to the sibling cgroup", state, ids)
				}
				if ids := effective(b, sibling); len(ids) != 0 {
					b.Fatalf("%s: programs %v effective on the sibling cgroup", state, ids)
				}
				for _, op := range ops {
					if got[op.name] == nil {
						got[op.name] = map[string]float64{}
					}
					got[op.name][state] = measure(op.name, op.n, op.do)
				}
				leave()
			}
			for _, op := range ops {
				if cost[op.name] == nil {
					cost[op.name], diff[op.name] = map[string][]float64{}, map[string][]float64{}
				}
				for _, state := range states {
					v := got[op.name][state]
					cost[op.name][state] = append(cost[op.name][state], v)
					diff[op.name][state] = append(diff[op.name][state], 100*(v-got[op.name]["none"])/got[op.name]["none"])
				}
			}
		}
	}
	b.Logf("sibling cgroup B, %d rounds, order rotating; 0 programs attached to or effective on B in every state, %d on A when isolated; cpu-ns/op median [min..max], difference vs none in the same round:", rounds, len(programs))
	for _, op := range ops {
		line := fmt.Sprintf("  %-22s", op.name)
		for _, state := range states {
			c, d := cost[op.name][state], diff[op.name][state]
			b.ReportMetric(median(c), op.name+"-"+state+"-cpu-ns/op")
			line += fmt.Sprintf(" | %s %.0f [%.0f..%.0f]", state, median(c), slices.Min(c), slices.Max(c))
			if state != "none" {
				b.ReportMetric(median(d), op.name+"-"+state+"-diff-%")
				line += fmt.Sprintf(" %+.1f%% [%+.1f..%+.1f]", median(d), slices.Min(d), slices.Max(d))
			}
		}
		b.Log(line)
	}
}

// attachEmpty attaches a program that allows everything to the cgroup at
// path on the attach type of each of progs and returns what detaches them.
func attachEmpty(b *testing.B, path string, progs []program) (detach func()) {
	b.Helper()
	links := make([]link.Link, 0, len(progs))
	detach = func() {
		for _, l := range links {
			if err := l.Close(); err != nil {
				b.Error(err)
			}
		}
	}
	for _, p := range progs {
		typ := ebpf.CGroupSockAddr
		if strings.HasPrefix(p.section, "cgroup_skb/") {
			typ = ebpf.CGroupSKB
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: typ, AttachType: p.attach, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		})
		if err != nil {
			detach()
			b.Fatalf("load empty %s program: %v", p.section, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: p.attach, Program: prog})
		prog.Close() // the link holds it
		if err != nil {
			detach()
			b.Fatalf("attach empty %s program: %v", p.section, err)
		}
		links = append(links, l)
	}
	return detach
}

func sockaddr(port uint16) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}
}

// effective returns the programs the kernel runs for the cgroup at path for
// Isolate's attach types, its ancestors' included.
func effective(b *testing.B, path string) []ebpf.ProgramID {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var ids []ebpf.ProgramID
	for _, p := range append(slices.Clone(programs), legacyPrograms...) {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: p.attach, QueryFlags: unix.BPF_F_QUERY_EFFECTIVE})
		if err != nil {
			b.Fatalf("query effective programs of %s: %v", path, err)
		}
		for _, ap := range res.Programs {
			ids = append(ids, ap.ID)
		}
	}
	return ids
}

// enterCgroup moves this whole process into the cgroup at path until the
// benchmark ends (registered after newCgroup, so it runs before the
// cgroup's removal).
func enterCgroup(b *testing.B, path string) {
	b.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	var home string
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			home = filepath.Join(unified, p)
		}
	}
	if home == "" {
		b.Fatalf("no cgroup v2 line in /proc/self/cgroup: %q", data)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(path, "cgroup.procs"), pid, 0); err != nil {
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

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
