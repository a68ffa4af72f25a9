package collect

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the helper process that runs inside a test
// cgroup: BULKHEAD_COLLECT_HELPER selects what it does.
const helperEnv = "BULKHEAD_COLLECT_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(mode, arg string) error {
	switch mode {
	case "net":
		// arg: "<4|6>,<host>,<tcp port>,<udp port>": listeners in the test
		// process to connect and send to.
		a := strings.Split(arg, ",")
		v, host := a[0], a[1]
		c, err := net.Dial("tcp"+v, net.JoinHostPort(host, a[2]))
		if err != nil {
			return err
		}
		_ = c.Close()
		ln, err := net.Listen("tcp"+v, net.JoinHostPort(host, "0"))
		if err != nil {
			return err
		}
		defer ln.Close()
		fmt.Println("listen", ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenPacket("udp"+v, net.JoinHostPort(host, "0"))
		if err != nil {
			return err
		}
		defer pc.Close()
		dst, err := net.ResolveUDPAddr("udp"+v, net.JoinHostPort(host, a[3]))
		if err != nil {
			return err
		}
		// Three sends to one destination: the kernel reports the first.
		for range 3 {
			if _, err := pc.WriteTo([]byte("x"), dst); err != nil {
				return err
			}
		}
		return nil
	case "getppid":
		// arg: how many getppid calls to make in a row on one thread.
		n, err := strconv.Atoi(arg)
		if err != nil {
			return err
		}
		runtime.LockOSThread()
		for range n {
			_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		return nil
	case "gap":
		// Three getppid, write "a" to stdout, block in a read of stdin,
		// then three getuid and write "b": raw calls on one thread, so
		// the thread's sequence is exactly these.
		runtime.LockOSThread()
		for range 3 {
			_, _, _ = unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		buf := []byte("a")
		if _, _, e := unix.RawSyscall(unix.SYS_WRITE, 1, uintptr(unsafe.Pointer(&buf[0])), 1); e != 0 {
			return e
		}
		if _, _, e := unix.RawSyscall(unix.SYS_READ, 0, uintptr(unsafe.Pointer(&buf[0])), 1); e != 0 {
			return e
		}
		for range 3 {
			_, _, _ = unix.RawSyscall(unix.SYS_GETUID, 0, 0, 0)
		}
		buf[0] = 'b'
		if _, _, e := unix.RawSyscall(unix.SYS_WRITE, 1, uintptr(unsafe.Pointer(&buf[0])), 1); e != 0 {
			return e
		}
		return nil
	case "pod":
		return podHelper(arg)
	case "load":
		// Unprivileged: New must say what is missing.
		c, err := New(Options{})
		if err == nil {
			_ = c.Close()
			return errors.New("New succeeded without privileges")
		}
		var ue *UnavailableError
		if !errors.As(err, &ue) {
			return fmt.Errorf("not an UnavailableError: %w", err)
		}
		fmt.Println("missing:", ue.Missing)
		fmt.Println("error:", err)
		return nil
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// requireBPF skips when this machine cannot load BPF at all: not root or no
// kernel BTF. Anywhere else a failing New fails the test.
func requireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel collection tests need root (CAP_BPF, CAP_PERFMON, cgroup writes); skipping")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("kernel collection tests need kernel BTF: %v; skipping", err)
	}
}

func newCollector(t testing.TB, opts Options) *Collector {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// cgroup2Root finds the cgroup v2 hierarchy: /sys/fs/cgroup/unified on a
// hybrid host, else /sys/fs/cgroup.
func cgroup2Root(t testing.TB) string {
	t.Helper()
	for _, dir := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	t.Fatal("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
	return ""
}

type testCgroup struct {
	path string
	id   uint64
	fd   int
}

// newCgroup creates a uniquely named cgroup; cleanup kills what is left in
// it and removes it, even when the test failed.
func newCgroup(t testing.TB, name string) testCgroup {
	t.Helper()
	path := filepath.Join(cgroup2Root(t), fmt.Sprintf("bulkhead-collect-test-%s-%d-%d", name, os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, path) })
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat cgroup: %v", err)
	}
	fd, err := unix.Open(path, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return testCgroup{path: path, id: st.Ino, fd: fd}
}

func removeCgroup(t testing.TB, path string) {
	procs, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	if slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("not removing cgroup %s: this test process is still in it", path)
		return
	}
	_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", path, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run starts a command inside cg (CLONE_INTO_CGROUP: it is there before its
// first instruction) and waits for it.
func (cg testCgroup) run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v in %s: %v: %s", name, args, cg.path, err, stderr.String())
	}
	return string(out)
}

// sink gathers what Run delivers.
type sink struct {
	mu     sync.Mutex
	events []Event
}

func (s *sink) add(e Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *sink) snapshot() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// waitFor polls until some event matches or 10s pass.
func (s *sink) waitFor(t testing.TB, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range s.snapshot() {
			if match(e) {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no event %s within 10s; got %d events: %s", what, len(s.snapshot()), describe(s.snapshot()))
	return Event{}
}

func describe(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		switch {
		case e.Exec != nil:
			fmt.Fprintf(&b, "\n  cg=%d exec %+v", e.CgroupID, *e.Exec)
		case e.Conn != nil:
			fmt.Fprintf(&b, "\n  cg=%d conn %+v", e.CgroupID, *e.Conn)
		}
	}
	return b.String()
}

func parseListenPort(t testing.TB, out string) uint16 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "listen "); ok {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				t.Fatalf("helper output %q: %v", out, err)
			}
			return uint16(n)
		}
	}
	t.Fatalf("helper printed no listen port: %q", out)
	return 0
}
