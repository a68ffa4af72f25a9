package enforce

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// The test binary re-executes itself as the processes in the test cgroups
// (ENFORCE_HELPER selects the role) and as the sensor that gets SIGKILLed.
func TestMain(m *testing.M) {
	if role := os.Getenv("ENFORCE_HELPER"); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

const unified = "/sys/fs/cgroup/unified"

// requireKernel skips unless the test can use BPF and cgroup v2 for real,
// and returns a private bpffs directory.
func requireKernel(tb testing.TB) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs, creates cgroups and mounts a bpffs")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(unified, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		tb.Skipf("needs cgroup v2 at %s", unified)
	}
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		tb.Skipf("cannot mount a bpffs (no BPF here?): %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	// A subdirectory, as in production (/sys/fs/bpf/bulkhead): the root of a
	// fresh bpffs may hold the kernel's preloaded maps.debug and progs.debug.
	pinDir := filepath.Join(dir, "bulkhead")
	if err := os.Mkdir(pinDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	return pinDir
}

func newEnforcer(tb testing.TB, pinDir string) *Enforcer {
	tb.Helper()
	e, err := New(pinDir)
	if err != nil {
		var me *MissingError
		if errors.As(err, &me) && me.What != "bpffs" {
			tb.Skipf("kernel enforcement unavailable here: %v", err)
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// newCgroup creates a cgroup v2 directory and removes it after killing its
// processes.
func newCgroup(tb testing.TB, name string) string {
	tb.Helper()
	path := filepath.Join(unified, fmt.Sprintf("bulkhead-enforce-test-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(path, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(path)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				tb.Errorf("remove cgroup %s: %v", path, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return path
}

// helper is a re-executed test binary.
type helper struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// startHelper runs role with env, in the cgroup cg when cg is not empty.
func startHelper(tb testing.TB, cg, role string, env ...string) *helper {
	tb.Helper()
	return startHelperFlags(tb, cg, 0, role, env...)
}

// startHelperFlags is startHelper with clone flags, e.g. CLONE_NEWNET to
// give the process its own network namespace as a pod has.
func startHelperFlags(tb testing.TB, cg string, cloneflags uintptr, role string, env ...string) *helper {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"ENFORCE_HELPER=" + role}, env...)...)
	cmd.Stderr = os.Stderr
	if cg != "" {
		f, err := os.Open(cg)
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	if cloneflags != 0 {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Cloneflags = cloneflags
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	h := &helper{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			h.mu.Unlock()
		}
		_ = cmd.Wait()
		close(h.done)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	return h
}

// has reports whether the helper printed a line starting with prefix.
func (h *helper) has(prefix string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

// last returns the last line starting with prefix.
func (h *helper) last(prefix string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(h.lines[i], prefix) {
			return h.lines[i]
		}
	}
	return ""
}

// count returns how many lines start with prefix.
func (h *helper) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes. It waits for
// the kernel and processes; it does not measure speed.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attached returns the IDs of the links attached to cgroup path for the
// enforcement attach types.
func attached(tb testing.TB, path string) []ebpf.ProgramID {
	tb.Helper()
	ids, err := queryAttached(path)
	if err != nil {
		tb.Fatalf("query programs of %s: %v", path, err)
	}
	return ids
}

// attachedFor returns the IDs of the programs attached to cgroup path for
// one attach type.
func attachedFor(tb testing.TB, path string, typ ebpf.AttachType) []ebpf.ProgramID {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	if err != nil {
		tb.Fatalf("query %v programs of %s: %v", typ, path, err)
	}
	ids := make([]ebpf.ProgramID, 0, len(res.Programs))
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

// pinLegacyLinks attaches a program that allows everything to cgroup path
// on each legacy sock_addr attach type and pins its link in dir, as an
// earlier version's isolation left them.
func pinLegacyLinks(tb testing.TB, path, dir string) {
	tb.Helper()
	for _, p := range legacyPrograms {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.CGroupSockAddr, AttachType: p.attach, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		})
		if err != nil {
			tb.Fatalf("load %s: %v", p.section, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: p.attach, Program: prog})
		prog.Close()
		if err != nil {
			tb.Fatalf("attach %s: %v", p.section, err)
		}
		err = l.Pin(filepath.Join(dir, p.pinName()))
		l.Close()
		if err != nil {
			tb.Fatalf("pin %s: %v", p.section, err)
		}
	}
}

// pinnedLinks returns the IDs of the programs of the links pinned for
// cgroup cgid.
func pinnedLinks(tb testing.TB, pinDir string, cgid uint64) []ebpf.ProgramID {
	tb.Helper()
	var ids []ebpf.ProgramID
	for _, p := range programs {
		l, err := link.LoadPinnedLink(filepath.Join(pinDir, fmt.Sprint(cgid), p.pinName()), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, info.Program)
	}
	return ids
}

// pins lists everything under the pin directory.
func pins(tb testing.TB, pinDir string) []string {
	tb.Helper()
	var out []string
	err := filepath.Walk(pinDir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path != pinDir {
			out = append(out, strings.TrimPrefix(path, pinDir+"/"))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// server counts, per client name, new TCP connections, bytes on held
// connections and UDP datagrams on two sockets (one plays the DNS server).
type server struct {
	family    string
	tcp       net.Listener
	udp, dns  *net.UDPConn
	mu        sync.Mutex
	conns     map[string]int
	held      map[string]int
	datagrams map[string]int
	dnsGrams  map[string]int
}

func newServer(tb testing.TB) *server { return newServerOn(tb, "4") }

// newServerOn serves on the loopback address of IP version family ("4" or
// "6").
func newServerOn(tb testing.TB, family string) *server {
	tb.Helper()
	s := &server{family: family, conns: map[string]int{}, held: map[string]int{}, datagrams: map[string]int{}, dnsGrams: map[string]int{}}
	lo := net.IPv4(127, 0, 0, 1)
	if family == "6" {
		lo = net.IPv6loopback
	}
	var err error
	if s.tcp, err = net.ListenTCP("tcp"+family, &net.TCPAddr{IP: lo}); err != nil {
		tb.Fatal(err)
	}
	if s.udp, err = net.ListenUDP("udp"+family, &net.UDPAddr{IP: lo}); err != nil {
		tb.Fatal(err)
	}
	if s.dns, err = net.ListenUDP("udp"+family, &net.UDPAddr{IP: lo}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.tcp.Close(); s.udp.Close(); s.dns.Close() })
	go func() {
		for {
			c, err := s.tcp.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	go s.readUDP(s.udp, s.datagrams)
	go s.readUDP(s.dns, s.dnsGrams)
	return s
}

func (s *server) serve(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	if !sc.Scan() {
		return
	}
	kind, name, _ := strings.Cut(sc.Text(), " ")
	s.mu.Lock()
	if kind == "new" {
		s.conns[name]++
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	for sc.Scan() {
		s.mu.Lock()
		s.held[name] += len(sc.Bytes())
		s.mu.Unlock()
	}
}

func (s *server) readUDP(c *net.UDPConn, into map[string]int) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		name, _, _ := strings.Cut(string(buf[:n]), " ")
		s.mu.Lock()
		into[name]++
		s.mu.Unlock()
	}
}

type counts struct{ conns, held, datagrams, dns int }

func (s *server) get(name string) counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return counts{s.conns[name], s.held[name], s.datagrams[name], s.dnsGrams[name]}
}

func (s *server) clientEnv(name string) []string {
	return []string{
		"NAME=" + name,
		"FAMILY=" + s.family,
		"SERVER=" + s.tcp.Addr().String(),
		"UDP=" + s.udp.LocalAddr().String(),
		"DNS=" + s.dns.LocalAddr().String(),
	}
}
