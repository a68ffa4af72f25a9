// Package enforce isolates one pod's cgroup in the kernel, independently of
// the CNI: cgroup_skb programs drop the cgroup's packets both ways (except
// DNS to allowed endpoints), so its datagrams are refused with EPERM and its
// new connections never complete, and a socket iterator destroys its
// established sockets so a live connection is cut at once. No sock_addr
// program (cgroup/connect*, cgroup/sendmsg*) is used: once one is attached
// anywhere, every UDP send and connect on the host pays for it. Every attachment is a bpf_link pinned under a bpffs directory,
// so a sensor restart or crash keeps the pod isolated, and a restarted sensor
// rebuilds its view from the pins alone.
//
// Pin layout, one directory per isolated cgroup:
//
//	<pinDir>/<cgroup-id>/meta              array map holding the intent (JSON: path, options, done)
//	<pinDir>/<cgroup-id>/allow             allowed DNS endpoints of this cgroup
//	<pinDir>/<cgroup-id>/counters          drop counters of this cgroup
//	<pinDir>/<cgroup-id>/cgroup_skb_egress ... one pinned link per program
//
// The intent is pinned before anything is attached, every pin is created in
// one step (BPF_OBJ_PIN or rename), and a link that was attached but not yet
// pinned is released by the kernel when its holder dies, so a crash at any
// point leaves either nothing attached or a directory that List and
// Reconcile see.
package enforce

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// MaxDNS bounds Options.DNS (the size of the per-cgroup allow map).
const MaxDNS = 16

// Options says what an isolated cgroup may still reach.
type Options struct {
	// AllowDNS lets UDP and TCP to (and replies from) the DNS endpoints pass.
	AllowDNS bool `json:"allowDNS"`
	// DNS are the cluster DNS endpoints (address and port, usually 53).
	// Ignored unless AllowDNS.
	DNS []netip.AddrPort `json:"dns,omitempty"`
}

// Result reports what Isolate put in place.
type Result struct {
	CgroupID uint64
	// Programs are the section names of the attached programs,
	// e.g. "cgroup_skb/egress".
	Programs []string
	// SocketsDestroyed counts the established sockets this call destroyed.
	SocketsDestroyed int
	// ConnCut is true when the cgroup's established sockets were walked and
	// destroyed (or there were none); false with Reason when no method worked.
	ConnCut bool
	// Method is "bpf_sock_destroy", "sock_diag" or "" when none worked.
	Method string
	// Reason explains a ConnCut of false, or a fallback.
	Reason string
}

// Isolation is one isolation found in the pin directory.
type Isolation struct {
	CgroupID uint64
	// Path is the cgroup path given to Isolate; empty when the intent was
	// never recorded (a crash right after the directory was made).
	Path    string
	Options Options
	// Programs are the section names whose links are pinned.
	Programs []string
	// Complete is true when every program is attached and the sockets were
	// cut: Isolate finished.
	Complete bool
}

// MissingError says which kernel feature or privilege is missing.
type MissingError struct {
	What string // "bpffs", "BTF", "CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "programs"
	Err  error
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("kernel enforcement unavailable: missing %s: %v", e.What, e.Err)
}

func (e *MissingError) Unwrap() error { return e.Err }

// program is one cgroup program: its name in the object, section name,
// attach type and pin name.
type program struct {
	obj     string
	section string
	attach  ebpf.AttachType
}

func (p program) pinName() string { return pinName(p.section) }

var programs = []program{
	{"egress", "cgroup_skb/egress", ebpf.AttachCGroupInetEgress},
	{"ingress", "cgroup_skb/ingress", ebpf.AttachCGroupInetIngress},
}

// legacyPrograms are the sock_addr programs earlier versions attached and
// pinned. Their links are detached wherever they are found (Isolate,
// Release, Reconcile), so an upgraded sensor stops costing the whole host.
var legacyPrograms = []program{
	{"connect4", "cgroup/connect4", ebpf.AttachCGroupInet4Connect},
	{"connect6", "cgroup/connect6", ebpf.AttachCGroupInet6Connect},
	{"sendmsg4", "cgroup/sendmsg4", ebpf.AttachCGroupUDP4Sendmsg},
	{"sendmsg6", "cgroup/sendmsg6", ebpf.AttachCGroupUDP6Sendmsg},
}

// Enforcer attaches and releases isolations. Its methods are safe for
// concurrent use; one Enforcer (one process) should own a pin directory.
type Enforcer struct {
	pinDir string
	spec   *ebpf.CollectionSpec
	// btf keeps the decoded kernel BTF across loads: decoding it is most of
	// the cost of loading the programs.
	btf *btf.Cache

	// iters are sets of socket-destroying iterators, each loaded once and
	// pointed at one cgroup per run, so cuts of different cgroups run at
	// once; iterErr is why they cannot be used here (nil when they can).
	iters   *iterPool
	iterErr error

	// mu guards closed: Isolate, Release and List hold it shared, so calls
	// on different cgroups run in parallel; Close holds it exclusively.
	mu     sync.RWMutex
	closed bool
	// cgroups serializes the work on one cgroup's pin directory.
	cgroups keyedMutex
	// crash, when set, is called at each step of Isolate and Release; tests
	// kill the process there to prove crash safety.
	crash func(step string)
}

// keyedMutex is one mutex per cgroup id, kept only while in use.
type keyedMutex struct {
	mu sync.Mutex
	m  map[uint64]*keyedEntry
}

type keyedEntry struct {
	mu    sync.Mutex
	users int
}

// lock locks id and returns its unlock.
func (k *keyedMutex) lock(id uint64) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[uint64]*keyedEntry{}
	}
	en := k.m[id]
	if en == nil {
		en = &keyedEntry{}
		k.m[id] = en
	}
	en.users++
	k.mu.Unlock()
	en.mu.Lock()
	return func() {
		en.mu.Unlock()
		k.mu.Lock()
		if en.users--; en.users == 0 {
			delete(k.m, id)
		}
		k.mu.Unlock()
	}
}

// New checks that pinDir is (or can be made) a directory on bpffs and that this kernel and process can
// load and attach the programs; it mounts nothing. The error is a
// *MissingError naming what is missing.
func New(pinDir string) (*Enforcer, error) {
	var st unix.Statfs_t
	// A missing pinDir is made when its parent is on bpffs (e.g.
	// /sys/fs/bpf/bulkhead); a missing bpffs is the caller's to mount.
	if err := unix.Statfs(filepath.Dir(pinDir), &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		if err := os.Mkdir(pinDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}
	if err := unix.Statfs(pinDir, &st); err != nil {
		return nil, &MissingError{What: "bpffs", Err: fmt.Errorf("%s: %w", pinDir, err)}
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return nil, &MissingError{What: "bpffs", Err: fmt.Errorf("%s is not on a bpf filesystem (mount -t bpf bpf %s)", pinDir, pinDir)}
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, &MissingError{What: "BTF", Err: err}
	}
	if err := checkCaps(); err != nil {
		return nil, err
	}
	spec, err := loadEnforce()
	if err != nil {
		return nil, fmt.Errorf("parse enforcement programs: %w", err)
	}
	e := &Enforcer{pinDir: pinDir, spec: spec, btf: btf.NewCache()}
	// Load every cgroup program once so a kernel that cannot run them is
	// reported now, not at the first isolation.
	objs, err := e.loadPrograms(nil, nil)
	if err != nil {
		return nil, &MissingError{What: "programs", Err: err}
	}
	objs.Close()
	var it *iterators
	if it, e.iterErr = e.loadIterators(); e.iterErr == nil {
		e.iters = &iterPool{load: e.loadIterators, idle: []*iterators{it}, all: []*iterators{it}}
	}
	return e, nil
}

// Close releases this process's file descriptors. Pins stay, so the
// isolations stay in force after the sensor exits.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if e.iters != nil {
		e.iters.Close()
		e.iters = nil
	}
	return nil
}

var errClosed = errors.New("enforcer closed")

// checkCaps reports the first capability the process lacks.
func checkCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return &MissingError{What: "capabilities", Err: err}
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	// CAP_SYS_ADMIN implies what CAP_BPF grants on every kernel.
	if !has(unix.CAP_BPF) && !has(unix.CAP_SYS_ADMIN) {
		return &MissingError{What: "CAP_BPF", Err: errors.New("needed to load programs")}
	}
	if !has(unix.CAP_NET_ADMIN) {
		return &MissingError{What: "CAP_NET_ADMIN", Err: errors.New("needed to attach cgroup programs")}
	}
	return nil
}

// objects are one isolation's loaded cgroup programs.
type objects struct {
	progs map[string]*ebpf.Program
}

func (o *objects) Close() {
	for _, p := range o.progs {
		p.Close()
	}
}

// loadPrograms loads the cgroup programs bound to one cgroup's maps (fresh
// throw-away maps when nil).
func (e *Enforcer) loadPrograms(allow, counters *ebpf.Map) (*objects, error) {
	spec := e.spec.Copy()
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}, Cache: e.btf}
	if allow != nil {
		opts.MapReplacements["allow"] = allow
	}
	if counters != nil {
		opts.MapReplacements["counters"] = counters
	}
	for name, p := range spec.Programs {
		if p.Type == ebpf.Tracing {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	o := &objects{progs: map[string]*ebpf.Program{}}
	for _, p := range programs {
		o.progs[p.obj] = coll.DetachProgram(p.obj)
		if o.progs[p.obj] == nil {
			o.Close()
			return nil, fmt.Errorf("program %s missing from object", p.obj)
		}
	}
	return o, nil
}

// iterators destroy the sockets of the cgroup in target (and its
// descendants), sparing peers in allow.
type iterators struct {
	TCP    *ebpf.Program `ebpf:"destroy_tcp"`
	UDP    *ebpf.Program `ebpf:"destroy_udp"`
	Target *ebpf.Map     `ebpf:"iter_target"`
	Allow  *ebpf.Map     `ebpf:"iter_allow"`
}

func (it *iterators) Close() {
	it.TCP.Close()
	it.UDP.Close()
	it.Target.Close()
	it.Allow.Close()
}

// iterPool hands out idle iterator sets, loading another when all are in
// use: as many sets as cuts ever ran at once.
type iterPool struct {
	load func() (*iterators, error)

	mu        sync.Mutex
	idle, all []*iterators
}

func (p *iterPool) get() (*iterators, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		it := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return it, nil
	}
	p.mu.Unlock()
	it, err := p.load()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.all = append(p.all, it)
	p.mu.Unlock()
	return it, nil
}

func (p *iterPool) put(it *iterators) {
	p.mu.Lock()
	p.idle = append(p.idle, it)
	p.mu.Unlock()
}

// Close closes every set; none may be in use.
func (p *iterPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range p.all {
		it.Close()
	}
	p.all, p.idle = nil, nil
}

func (e *Enforcer) loadIterators() (*iterators, error) {
	var it iterators
	if err := e.spec.LoadAndAssign(&it, &ebpf.CollectionOptions{Cache: e.btf}); err != nil {
		return nil, fmt.Errorf("load socket iterators (bpf_sock_destroy needs Linux 6.5): %w", err)
	}
	return &it, nil
}

// queryAttached returns the IDs of the programs attached to the cgroup at
// path for Isolate's attach types and the legacy ones (for tests and diagnostics; the kernel
// reports no link IDs for cgroup attachments).
func queryAttached(path string) ([]ebpf.ProgramID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []ebpf.ProgramID
	for _, p := range append(slices.Clone(programs), legacyPrograms...) {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: p.attach})
		if err != nil {
			return nil, err
		}
		for _, ap := range res.Programs {
			ids = append(ids, ap.ID)
		}
	}
	return ids, nil
}
