package enforce

import (
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
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkSiblingOverhead shows what an isolation costs the pods that are
// not isolated: this process, in a sibling cgroup B, runs a getppid loop,
// a TCP connect+send+close loop and a UDP sendto loop on loopback, with an
// isolation active on cgroup A (Isolate) and with no isolation anywhere. The
// two states alternate over BULKHEAD_BENCH_ROUNDS rounds (default 6). Each
// round checks that no program is attached to B or effective on it (the
// kernel's BPF_F_QUERY_EFFECTIVE view, which includes what ancestors pass
// down) while A has all of Isolate's. Costs are the loop thread's CPU time
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
		{"getppid", 1_000_000, func() error { unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0); return nil }},
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
	}
	ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(ufd) })
	ops[2].do = func() error { return unix.Sendto(ufd, payload, 0, udpAddr) }

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

	cost := map[string]map[bool][]float64{} // op -> isolation active -> ns/op per round
	diff := map[string][]float64{}          // op -> % per round (isolated vs none)
	for b.Loop() {
		for i := range rounds {
			states := []bool{false, true}
			if i%2 == 1 {
				states = []bool{true, false}
			}
			got := map[string]map[bool]float64{}
			for _, active := range states {
				if active {
					res, err := e.Isolate(isolated, Options{})
					if err != nil {
						b.Fatal(err)
					}
					if n := len(attached(b, isolated)); n != len(programs) {
						b.Fatalf("isolated cgroup has %d programs attached, want %d (%v)", n, len(programs), res.Programs)
					}
				} else if ids := attached(b, isolated); len(ids) != 0 {
					b.Fatalf("no isolation, yet cgroup A has programs %v", ids)
				}
				if ids := attached(b, sibling); len(ids) != 0 {
					b.Fatalf("programs %v attached to the sibling cgroup", ids)
				}
				if ids := effective(b, sibling); len(ids) != 0 {
					b.Fatalf("programs %v effective on the sibling cgroup", ids)
				}
				for _, op := range ops {
					if got[op.name] == nil {
						got[op.name] = map[bool]float64{}
					}
					got[op.name][active] = measure(op.name, op.n, op.do)
				}
				if active {
					if err := e.Release(isolated); err != nil {
						b.Fatal(err)
					}
				}
			}
			for _, op := range ops {
				if cost[op.name] == nil {
					cost[op.name] = map[bool][]float64{}
				}
				none, with := got[op.name][false], got[op.name][true]
				cost[op.name][false] = append(cost[op.name][false], none)
				cost[op.name][true] = append(cost[op.name][true], with)
				diff[op.name] = append(diff[op.name], 100*(with-none)/none)
			}
		}
	}
	b.Logf("sibling cgroup B, %d rounds alternating none/isolated; 0 programs attached to or effective on B in every round, %d on A while isolated", rounds, len(programs))
	for _, op := range ops {
		none, with, d := cost[op.name][false], cost[op.name][true], diff[op.name]
		b.ReportMetric(median(none), op.name+"-none-cpu-ns/op")
		b.ReportMetric(median(with), op.name+"-A-isolated-cpu-ns/op")
		b.ReportMetric(median(d), op.name+"-diff-%")
		b.Logf("  %-24s none median %9.0f cpu-ns/op [%.0f..%.0f]; A isolated median %9.0f [%.0f..%.0f]; difference per round median %+.2f%% [%+.2f..%+.2f]",
			op.name, median(none), slices.Min(none), slices.Max(none), median(with), slices.Min(with), slices.Max(with), median(d), slices.Min(d), slices.Max(d))
	}
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
	for _, p := range programs {
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
