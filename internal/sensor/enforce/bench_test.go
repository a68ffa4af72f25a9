package enforce

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// holder dials and holds one more TCP connection to SERVER for each line on
// stdin, printing "held <n>" once it is established.
func holder() int {
	var conns []net.Conn
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		c, err := net.Dial("tcp4", os.Getenv("SERVER"))
		if err != nil {
			fmt.Println("dial-error", err)
			continue
		}
		conns = append(conns, c)
		fmt.Println("held", len(conns))
	}
	return 0
}

// BenchmarkIsolate measures Isolate on a pod cgroup whose process holds an
// established connection: attaching the six programs, pinning them, and
// destroying the connection. Release and re-dialling happen off the clock.
func BenchmarkIsolate(b *testing.B) {
	pinDir := requireKernel(b)
	e := newEnforcer(b, pinDir)
	srv := newServer(b)
	pod := newCgroup(b, "bench")
	opts := Options{AllowDNS: true, DNS: []netip.AddrPort{netip.MustParseAddrPort(srv.dns.LocalAddr().String())}}

	f, err := os.Open(pod)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "ENFORCE_HELPER=holder", "SERVER="+srv.tcp.Addr().String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.Cleanup(func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)

	var lat []time.Duration
	destroyed := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if err := e.Release(pod); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintln(in, "dial")
		if !lines.Scan() || lines.Text()[:4] != "held" {
			b.Fatalf("holder: %q %v", lines.Text(), lines.Err())
		}
		b.StartTimer()
		start := time.Now()
		res, err := e.Isolate(pod, opts)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		destroyed += res.SocketsDestroyed
	}
	b.StopTimer()
	if destroyed < len(lat) {
		b.Fatalf("destroyed %d sockets in %d isolations: the held connection was not cut every time", destroyed, len(lat))
	}
	if err := e.Release(pod); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
