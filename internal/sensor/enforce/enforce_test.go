package enforce

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/sensor/netns"
	"golang.org/x/sys/unix"
)

func TestNewRejectsNonBPFFS(t *testing.T) {
	_, err := New(t.TempDir())
	var me *MissingError
	if !errors.As(err, &me) || me.What != "bpffs" {
		t.Fatalf("New on a plain directory: got %v, want a MissingError for bpffs", err)
	}
}

func TestNewMakesPinDirOnBPFFS(t *testing.T) {
	root := filepath.Dir(requireKernel(t))
	dir := filepath.Join(root, "made")
	e := newEnforcer(t, dir)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("pin directory not made: %v", err)
	}
	if isos, err := e.List(); err != nil || len(isos) != 0 {
		t.Errorf("List on a new directory = %v, %v", isos, err)
	}
}

func TestNormalize(t *testing.T) {
	dns := netip.MustParseAddrPort("10.96.0.10:53")
	for _, tc := range []struct {
		name string
		in   Options
		want Options
		err  string
	}{
		{name: "no dns", in: Options{}, want: Options{}},
		{name: "dns ignored unless allowed", in: Options{DNS: []netip.AddrPort{dns}}, want: Options{}},
		{name: "allow without endpoints", in: Options{AllowDNS: true}, err: "at least one"},
		{name: "no port", in: Options{AllowDNS: true, DNS: []netip.AddrPort{netip.AddrPortFrom(dns.Addr(), 0)}}, err: "invalid DNS endpoint"},
		{name: "dedup and sort", in: Options{AllowDNS: true, DNS: []netip.AddrPort{dns, netip.MustParseAddrPort("10.0.0.1:53"), dns}},
			want: Options{AllowDNS: true, DNS: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"), dns}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !optionsEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// isolatedEnv is one pod and one sibling, each running a client against a
// server in the test process.
type isolatedEnv struct {
	pinDir       string
	e            *Enforcer
	srv          *server
	pod, sibling string
	podC, sibC   *helper
	opts         Options
}

func setup(t *testing.T) *isolatedEnv { return setupOn(t, "4") }

// setupOn runs the clients against a server on the loopback address of IP
// version family ("4" or "6").
func setupOn(t *testing.T, family string) *isolatedEnv {
	pinDir := requireKernel(t)
	env := &isolatedEnv{pinDir: pinDir, e: newEnforcer(t, pinDir), srv: newServerOn(t, family)}
	env.pod = newCgroup(t, "pod")
	env.sibling = newCgroup(t, "sibling")
	env.opts = Options{AllowDNS: true, DNS: []netip.AddrPort{netip.MustParseAddrPort(env.srv.dns.LocalAddr().String())}}
	env.podC = startHelper(t, env.pod, "client", env.srv.clientEnv("pod")...)
	env.sibC = startHelper(t, env.sibling, "client", env.srv.clientEnv("sibling")...)
	for _, name := range []string{"pod", "sibling"} {
		waitFor(t, name+" traffic", func() bool {
			c := env.srv.get(name)
			return c.conns > 0 && c.held > 0 && c.datagrams > 0 && c.dns > 0
		})
	}
	return env
}

// flowing waits until name's new connections, held connection (unless
// skipHeld) and datagrams all advance past now.
func (env *isolatedEnv) flowing(t *testing.T, name string, skipHeld bool) {
	t.Helper()
	before := env.srv.get(name)
	waitFor(t, name+" traffic to flow", func() bool {
		c := env.srv.get(name)
		return c.conns > before.conns && c.datagrams > before.datagrams && c.dns > before.dns &&
			(skipHeld || c.held > before.held)
	})
}

// blocked checks that the pod's new connections and non-DNS datagrams stop
// while DNS still passes.
func (env *isolatedEnv) blocked(t *testing.T) {
	t.Helper()
	// Let what was in flight before the isolation arrive.
	time.Sleep(100 * time.Millisecond)
	before := env.srv.get("pod")
	errsBefore := env.podC.count("connect-error")
	udpErrsBefore := env.podC.count("udp-error")
	waitFor(t, "DNS datagrams to keep passing, connects and datagrams to keep failing", func() bool {
		return env.srv.get("pod").dns >= before.dns+10 && env.podC.count("connect-error") >= errsBefore+5 &&
			env.podC.count("udp-error") >= udpErrsBefore+5
	})
	after := env.srv.get("pod")
	if after.conns != before.conns {
		t.Errorf("isolated pod opened %d new connections", after.conns-before.conns)
	}
	if after.datagrams != before.datagrams {
		t.Errorf("isolated pod delivered %d non-DNS datagrams", after.datagrams-before.datagrams)
	}
	if after.held != before.held {
		t.Errorf("isolated pod's held connection carried %d bytes", after.held-before.held)
	}
	// The egress drop refuses a datagram in sendto(2) itself.
	if l := env.podC.last("udp-error"); !strings.Contains(l, "operation not permitted") {
		t.Errorf("sendto failed with %q, want EPERM from the cgroup_skb egress drop", l)
	}
	// A connect's SYNs are dropped: it never completes, and the client's
	// 200ms dial timeout ends it.
	if l := env.podC.last("connect-error"); !strings.Contains(l, "timeout") {
		t.Errorf("connect failed with %q, want the dial to time out", l)
	}
}

func (env *isolatedEnv) cgid(t *testing.T, path string) uint64 {
	id, err := cgroupID(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIsolateRealPackets(t *testing.T) {
	for _, family := range []string{"4", "6"} {
		t.Run("ipv"+family, func(t *testing.T) { testIsolateRealPackets(t, family) })
	}
}

func testIsolateRealPackets(t *testing.T, family string) {
	env := setupOn(t, family)
	e := env.e

	res, err := e.Isolate(env.pod, env.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolate: %+v", res)
	if !res.ConnCut || res.Method != "bpf_sock_destroy" || res.SocketsDestroyed < 1 {
		t.Errorf("result %+v: want the held connection cut by bpf_sock_destroy", res)
	}
	if res.CgroupID != env.cgid(t, env.pod) || len(res.Programs) != len(programs) {
		t.Errorf("result %+v: wrong cgroup or programs", res)
	}
	// The established connection is reset under the pod's feet.
	waitFor(t, "the pod's held connection to fail", func() bool {
		_, ok := env.podC.has("held-error")
		return ok
	})
	l, _ := env.podC.has("held-error")
	t.Logf("pod saw: %s", l)
	if !strings.Contains(l, "connection abort") && !strings.Contains(l, "reset") && !strings.Contains(l, "broken pipe") {
		t.Errorf("held connection failed with %q, want it aborted or reset", l)
	}
	env.blocked(t)
	// The sibling is untouched throughout, including its held connection.
	env.flowing(t, "sibling", false)
	if _, ok := env.sibC.has("held-error"); ok {
		t.Error("sibling's held connection failed")
	}
	drops, err := e.Drops(res.CgroupID)
	if err != nil || drops == 0 {
		t.Errorf("Drops = %d, %v; want packets counted", drops, err)
	}

	// Zero overhead on pods that are not isolated: nothing is attached to
	// the sibling, and the pod has exactly the pinned links.
	if ids := attached(t, env.sibling); len(ids) != 0 {
		t.Errorf("sibling has programs attached: links %v", ids)
	}
	podLinks := attached(t, env.pod)
	pinned := pinnedLinks(t, env.pinDir, res.CgroupID)
	slices.Sort(podLinks)
	slices.Sort(pinned)
	if len(podLinks) != len(programs) || !slices.Equal(podLinks, pinned) {
		t.Errorf("pod links %v, pinned %v; want the %d pinned links attached", podLinks, pinned, len(programs))
	}

	// Idempotent: the same call again attaches nothing new.
	res2, err := e.Isolate(env.pod, env.opts)
	if err != nil {
		t.Fatal(err)
	}
	again := attached(t, env.pod)
	slices.Sort(again)
	if !slices.Equal(again, podLinks) || res2.SocketsDestroyed != 0 {
		t.Errorf("second Isolate changed state: links %v → %v, destroyed %d", podLinks, again, res2.SocketsDestroyed)
	}
	isos, err := e.List()
	if err != nil || len(isos) != 1 || !isos[0].Complete || isos[0].Path != env.pod || !optionsEqual(isos[0].Options, env.opts) {
		t.Errorf("List = %+v, %v", isos, err)
	}

	if err := e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
	env.flowing(t, "pod", true)
	if ids := attached(t, env.pod); len(ids) != 0 {
		t.Errorf("links still attached to the pod after Release: %v", ids)
	}
	if p := pins(t, env.pinDir); len(p) != 0 {
		t.Errorf("pins left after Release: %v", p)
	}
	if err := e.Release(env.pod); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

// Isolate attaches no sock_addr program (cgroup/connect4/6,
// cgroup/sendmsg4/6): once one is attached to any cgroup, every UDP
// sendto(2) and connect(2) on the host takes the socket lock to run the
// sender's (empty) program list (BenchmarkSiblingOverhead measured UDP
// connect +16% and +24%), so only cgroup_skb programs, which the kernel
// skips for sockets of cgroups without one, may be used.
func TestIsolateAttachesNoSockAddrHook(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	pod := newCgroup(t, "nosockaddr")
	if _, err := e.Isolate(pod, Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Release(pod) })
	for _, p := range legacyPrograms {
		if ids := attachedFor(t, pod, p.attach); len(ids) != 0 {
			t.Errorf("%s programs %v attached to the isolated pod", p.section, ids)
		}
	}
	for _, p := range programs {
		if !strings.HasPrefix(p.section, "cgroup_skb/") {
			t.Errorf("Isolate attaches %s, not a cgroup_skb program", p.section)
		}
		if ids := attachedFor(t, pod, p.attach); len(ids) != 1 {
			t.Errorf("%s: %d programs attached, want 1", p.section, len(ids))
		}
	}
}

// An isolation pinned by an earlier version carries sock_addr links: an
// upgraded sensor's Reconcile re-applies it without them, keeping the pod
// isolated, and Release removes everything.
func TestReconcileDropsLegacySockAddrLinks(t *testing.T) {
	env := setup(t)
	if _, err := env.e.Isolate(env.pod, env.opts); err != nil {
		t.Fatal(err)
	}
	cgid := env.cgid(t, env.pod)
	pinLegacyLinks(t, env.pod, filepath.Join(env.pinDir, fmt.Sprint(cgid)))
	if n := len(attached(t, env.pod)); n != len(programs)+len(legacyPrograms) {
		t.Fatalf("%d programs attached after pinning the legacy links, want %d", n, len(programs)+len(legacyPrograms))
	}
	isos, err := env.e.List()
	if err != nil || len(isos) != 1 || isos[0].Complete {
		t.Fatalf("List = %+v, %v; want one incomplete isolation", isos, err)
	}
	applied, released, err := env.e.Reconcile(map[string]Options{env.pod: env.opts})
	if err != nil || !slices.Equal(applied, []string{env.pod}) || len(released) != 0 {
		t.Fatalf("Reconcile = %v, %v, %v; want the pod re-applied", applied, released, err)
	}
	for _, p := range legacyPrograms {
		if ids := attachedFor(t, env.pod, p.attach); len(ids) != 0 {
			t.Errorf("%s still attached after Reconcile: %v", p.section, ids)
		}
	}
	env.blocked(t)
	// Pinned again, Release detaches them with the rest.
	pinLegacyLinks(t, env.pod, filepath.Join(env.pinDir, fmt.Sprint(cgid)))
	if err := env.e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
	if ids := attached(t, env.pod); len(ids) != 0 {
		t.Errorf("programs left after Release: %v", ids)
	}
	if p := pins(t, env.pinDir); len(p) != 0 {
		t.Errorf("pins left after Release: %v", p)
	}
}

func TestIsolateWithoutDNS(t *testing.T) {
	env := setup(t)
	if _, err := env.e.Isolate(env.pod, Options{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	before := env.srv.get("pod")
	errs := env.podC.count("dns-error")
	waitFor(t, "DNS datagrams to be refused", func() bool { return env.podC.count("dns-error") >= errs+5 })
	if after := env.srv.get("pod"); after != before {
		t.Errorf("pod traffic passed without allowDNS: %+v → %+v", before, after)
	}
	env.flowing(t, "sibling", false)
	// Changing the options in place lets DNS through again.
	if _, err := env.e.Isolate(env.pod, env.opts); err != nil {
		t.Fatal(err)
	}
	env.blocked(t)
	if err := env.e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsIsolation(t *testing.T) {
	env := setup(t)
	if _, err := env.e.Isolate(env.pod, env.opts); err != nil {
		t.Fatal(err)
	}
	if err := env.e.Close(); err != nil {
		t.Fatal(err)
	}
	// A new sensor on the same pins: the pod is still isolated.
	e := newEnforcer(t, env.pinDir)
	env.blocked(t)
	isos, err := e.List()
	if err != nil || len(isos) != 1 || !isos[0].Complete || isos[0].Path != env.pod {
		t.Fatalf("List after restart = %+v, %v", isos, err)
	}
	applied, released, err := e.Reconcile(map[string]Options{})
	if err != nil || len(applied) != 0 || !slices.Equal(released, []string{env.pod}) {
		t.Fatalf("Reconcile({}) = %v, %v, %v; want the pod released", applied, released, err)
	}
	env.flowing(t, "pod", true)
	if ids := attached(t, env.pod); len(ids) != 0 {
		t.Errorf("links left after Reconcile released: %v", ids)
	}
	want := map[string]Options{env.pod: env.opts}
	applied, released, err = e.Reconcile(want)
	if err != nil || !slices.Equal(applied, []string{env.pod}) || len(released) != 0 {
		t.Fatalf("Reconcile(pod) = %v, %v, %v; want the pod applied", applied, released, err)
	}
	env.blocked(t)
	// Nothing to do the second time.
	applied, released, err = e.Reconcile(want)
	if err != nil || len(applied)+len(released) != 0 {
		t.Errorf("second Reconcile = %v, %v, %v; want no change", applied, released, err)
	}
	if err := e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
	if p := pins(t, env.pinDir); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
}

func TestReleaseOfRemovedCgroup(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	cg := filepath.Join(unified, "bulkhead-enforce-test-gone")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	if _, err := e.Isolate(cg, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cg); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(cg); err != nil {
		t.Fatal(err)
	}
	if p := pins(t, pinDir); len(p) != 0 {
		t.Errorf("pins left: %v", p)
	}
}

func TestIsolateRejectsBadInput(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	for _, path := range []string{"/nonexistent/cgroup", "/sys/fs/cgroup/memory", t.TempDir()} {
		if _, err := e.Isolate(path, Options{}); err == nil {
			t.Errorf("Isolate(%s) succeeded", path)
		}
	}
	if _, err := e.Isolate(newCgroup(t, "bad"), Options{AllowDNS: true}); err == nil {
		t.Error("Isolate with allowDNS and no endpoints succeeded")
	}
	if p := pins(t, pinDir); len(p) != 0 {
		t.Errorf("bad input left pins: %v", p)
	}
}

// A pod has its own network namespace, whose sockets an iterator or
// sock_diag opened in the sensor's namespace never sees: Isolate must enter
// the pod's namespace to cut them.
func TestIsolatePodNetns(t *testing.T) {
	pinDir := requireKernel(t)
	e := newEnforcer(t, pinDir)
	pod := newCgroup(t, "netns")
	h := startHelperFlags(t, pod, unix.CLONE_NEWNET, "netns-pod")
	waitFor(t, "the pod's connection", func() bool { _, ok := h.has("held-ok"); return ok })
	if l, ok := h.has("setup-error"); ok {
		t.Fatal(l)
	}
	res, err := e.Isolate(pod, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolate: %+v", res)
	// Both ends of the pod's connection to itself belong to its cgroup.
	if !res.ConnCut || res.SocketsDestroyed < 2 {
		t.Errorf("result %+v: want both ends of the connection in the pod's namespace destroyed", res)
	}
	waitFor(t, "the pod's held connection to fail", func() bool { _, ok := h.has("held-error"); return ok })
	if err := e.Release(pod); err != nil {
		t.Fatal(err)
	}
}

// The fallback for kernels without bpf_sock_destroy, run for real here.
func TestIsolateSockDiagFallback(t *testing.T) {
	env := setup(t)
	env.e.iters.Close()
	env.e.iters, env.e.iterErr = nil, errors.New("disabled by the test")
	res, err := env.e.Isolate(env.pod, env.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolate: %+v", res)
	if !res.ConnCut || res.Method != "sock_diag" || res.SocketsDestroyed < 1 || !strings.Contains(res.Reason, "disabled by the test") {
		t.Errorf("result %+v: want the held connection cut by sock_diag, saying why", res)
	}
	waitFor(t, "the pod's held connection to fail", func() bool { _, ok := env.podC.has("held-error"); return ok })
	env.blocked(t)
	env.flowing(t, "sibling", false)
	if _, ok := env.sibC.has("held-error"); ok {
		t.Error("sibling's held connection failed")
	}
	if err := env.e.Release(env.pod); err != nil {
		t.Fatal(err)
	}
}

// The namespace of a pod's process is held open once found: the process
// can exit before its namespace is entered (the race made Isolate report
// "not cut" when it was looked up again by /proc/<pid>/ns/net).
func TestNetnsOutlivesItsProcess(t *testing.T) {
	requireKernel(t)
	pod := newCgroup(t, "netns-exit")
	h := startHelperFlags(t, pod, unix.CLONE_NEWNET, "netns-pod")
	waitFor(t, "the pod's connection", func() bool { _, ok := h.has("held-ok"); return ok })
	nss, err := cgroupNetns(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Close(nss)
	if len(nss) != 1 {
		t.Fatalf("found %d namespaces, want the pod's one", len(nss))
	}
	_ = h.cmd.Process.Kill()
	<-h.done
	var inode uint64
	err = nss[0].Run(func() error {
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		inode = st.Ino
		return err
	})
	if err != nil {
		t.Fatalf("entering the namespace after its process exited: %v", err)
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if inode == self.Ino {
		t.Error("ran in the test's own namespace, not the pod's")
	}
}
