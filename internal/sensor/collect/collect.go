// Package collect loads the sensor's eBPF programs and reads what they
// collect for tracked cgroups (cgroup v2 ids): system-call trigrams counted in
// the kernel, and exec and connection records from a ring buffer.
//
// What the kernel sees, precisely:
//   - Trigrams are per thread: a thread's first two calls in a tracked
//     cgroup only start its sequence. Numbers are the running kernel's
//     (SyscallName knows x86_64's); 32-bit compat calls are not told apart.
//     Under heavy system-call load (Options.Duty) sys_enter is attached in
//     windows, and a sequence starts anew in each (duty.go); the other
//     programs are always attached.
//   - Execs: Binary is the path given to execve; argv is read up to ArgsBytes.
//   - TCP connect and listen come from sock:inet_sock_set_state; a socket
//     that listens without bind gets its port afterwards and reports 0.
//   - Sockets lists the TCP connections and listeners a cgroup had before
//     it was tracked (a bpf iterator over the socket tables).
//   - UDP destinations come from net:net_dev_queue in the sending task, at
//     most once per destination and cgroup per Options.UDPInterval.
package collect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Options size the kernel maps. Zero values take the defaults.
type Options struct {
	// RingBufferBytes: power of two, a multiple of the page size. Default 256 KiB.
	RingBufferBytes int
	// MaxTrigrams: (cgroup, trigram) counters kept between drains in the
	// map behind the per-CPU fast tables (2048 slots each, two ways per
	// trigram; a trigram counts there when both its slots are taken); the
	// least recently used are evicted beyond it. Default 16384.
	MaxTrigrams int
	// ArgsMax: arguments kept per exec (the kernel reads at most ArgsBytes of
	// argv). Default 32.
	ArgsMax int
	// MaxTracked: cgroups that can be tracked at once. Default 1024.
	MaxTracked int
	// UDPInterval: a UDP destination is reported at most once per cgroup in
	// this interval. Default 1 minute.
	UDPInterval time.Duration
	// Duty attaches sys_enter in a duty cycle under heavy system-call load
	// (duty.go); the zero value keeps it always attached.
	Duty DutyConfig
}

const (
	defaultRingBufferBytes = 256 << 10
	defaultMaxTrigrams     = 16384
	defaultArgsMax         = 32
	defaultMaxTracked      = 1024
	defaultUDPInterval     = time.Minute
)

func (o Options) withDefaults() (Options, error) {
	if o.RingBufferBytes == 0 {
		o.RingBufferBytes = defaultRingBufferBytes
	}
	if o.MaxTrigrams == 0 {
		o.MaxTrigrams = defaultMaxTrigrams
	}
	if o.ArgsMax == 0 {
		o.ArgsMax = defaultArgsMax
	}
	if o.MaxTracked == 0 {
		o.MaxTracked = defaultMaxTracked
	}
	if o.UDPInterval == 0 {
		o.UDPInterval = defaultUDPInterval
	}
	page := os.Getpagesize()
	switch {
	case o.RingBufferBytes < page || o.RingBufferBytes > 1<<30 || o.RingBufferBytes&(o.RingBufferBytes-1) != 0:
		return o, fmt.Errorf("RingBufferBytes %d: want a power of two from %d (the page size) to 1 GiB", o.RingBufferBytes, page)
	case o.MaxTrigrams < 0 || o.MaxTrigrams > 1<<24:
		return o, fmt.Errorf("MaxTrigrams %d: want 1 to %d", o.MaxTrigrams, 1<<24)
	case o.ArgsMax < 0 || o.ArgsMax > maxArgsRecorded:
		return o, fmt.Errorf("ArgsMax %d: want 1 to %d", o.ArgsMax, maxArgsRecorded)
	case o.MaxTracked < 0 || o.MaxTracked > 1<<20:
		return o, fmt.Errorf("MaxTracked %d: want 1 to %d", o.MaxTracked, 1<<20)
	case o.UDPInterval < 0:
		return o, fmt.Errorf("UDPInterval %s: want a positive duration", o.UDPInterval)
	}
	var err error
	o.Duty, err = o.Duty.withDefaults()
	return o, err
}

// UnavailableError says what the kernel or the process lacks for collection.
type UnavailableError struct {
	// Missing names it for a human, e.g. "kernel BTF", "attach point
	// tp_btf/net_dev_queue", "program sys_enter refused by the verifier".
	Missing string
	Err     error
}

func (e *UnavailableError) Error() string {
	return "kernel collection unavailable: missing " + e.Missing + ": " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Stats are counters since New.
type Stats struct {
	// Events delivered by Run.
	Events uint64
	// Malformed records skipped by Run.
	Malformed uint64
	// Lost records: the kernel found the ring buffer full.
	Lost uint64
	// Trigrams: (cgroup, trigram) counters returned by DrainSyscalls.
	Trigrams uint64
}

// Collector owns the loaded programs, their links and maps.
type Collector struct {
	opts  Options
	objs  collectObjects
	links []link.Link // the event programs' and the socket iterator's
	rd    *ringbuf.Reader
	// sysLink attaches sys_enter; nil in an off window of the duty cycle.
	sysLink  link.Link
	sysEpoch uint32 // sys_epoch
	// stopDuty ends the duty cycle; dutyDone is closed when it has.
	stopDuty context.CancelFunc
	dutyDone chan struct{}
	dutyMu   sync.Mutex
	duty     DutyState
	// wake: Run saw an exec or connection of a tracked cgroup.
	wake chan struct{}
	// sockIter lists existing sockets (Sockets); it is in links too.
	sockIter *link.Iter

	mu      sync.Mutex // tracked set, drains, Close
	tracked map[uint64]struct{}
	gen     uint32 // tracked_gen
	// epoch is fast_epoch: the fast table the programs count into.
	epoch uint32
	// untracked since the last drain: their counts still in a fast table
	// are dropped even if they are tracked again meanwhile.
	untracked map[uint64]struct{}
	closed    bool

	running                     atomic.Bool
	events, malformed, trigrams atomic.Uint64
}

// New loads and attaches the programs. Errors that the kernel or privileges
// cause are *UnavailableError; bad Options are plain errors.
func New(opts Options) (*Collector, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("collect options: %w", err)
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return nil, &UnavailableError{Missing: "kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)", Err: err}
	}
	// Needed only before Linux 5.11 (no memcg accounting of BPF memory). Its
	// probe itself needs BPF, so a failure here is reported only if loading
	// fails too.
	memlockErr := rlimit.RemoveMemlock()
	spec, err := loadCollect()
	if err != nil {
		return nil, fmt.Errorf("collect: parse embedded BPF object: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(opts.RingBufferBytes)
	spec.Maps["trigrams"].MaxEntries = uint32(opts.MaxTrigrams)
	spec.Maps["tracked"].MaxEntries = uint32(opts.MaxTracked)
	if err := spec.Variables["udp_dedup_ns"].Set(uint64(opts.UDPInterval)); err != nil {
		return nil, fmt.Errorf("collect: set UDP interval: %w", err)
	}

	c := &Collector{opts: opts, tracked: map[uint64]struct{}{}, untracked: map[uint64]struct{}{}, wake: make(chan struct{}, 1)}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		return nil, loadError(err, memlockErr)
	}
	attach := []struct {
		what string
		prog *ebpf.Program
	}{
		{"tp_btf/sched_process_exec", c.objs.SchedProcessExec},
		{"tp_btf/inet_sock_set_state", c.objs.InetSockSetState},
		{"tp_btf/net_dev_queue", c.objs.NetDevQueue},
	}
	for _, a := range attach {
		l, err := link.AttachTracing(link.TracingOptions{Program: a.prog})
		if err != nil {
			_ = c.Close()
			if isPermission(err) {
				return nil, &UnavailableError{Missing: "permission to attach " + a.what + " (CAP_BPF and CAP_PERFMON, or root)", Err: err}
			}
			return nil, &UnavailableError{Missing: "attach point " + a.what, Err: err}
		}
		c.links = append(c.links, l)
	}
	c.duty = DutyState{Ratio: 1}
	if err := c.attachSyscalls(); err != nil {
		_ = c.Close()
		if isPermission(err) {
			return nil, &UnavailableError{Missing: "permission to attach tp_btf/sys_enter (CAP_BPF and CAP_PERFMON, or root)", Err: err}
		}
		return nil, &UnavailableError{Missing: "attach point tp_btf/sys_enter", Err: err}
	}
	if c.sockIter, err = link.AttachIter(link.IterOptions{Program: c.objs.ExistingTcp}); err != nil {
		_ = c.Close()
		return nil, &UnavailableError{Missing: "attach point iter/tcp", Err: err}
	}
	c.links = append(c.links, c.sockIter)
	if c.rd, err = ringbuf.NewReader(c.objs.Events); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("collect: open ring buffer: %w", err)
	}
	if opts.Duty.Budget > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		c.stopDuty, c.dutyDone = cancel, make(chan struct{})
		go func() {
			defer close(c.dutyDone)
			c.runDuty(ctx, opts.Duty)
		}()
	}
	return c, nil
}

var programName = regexp.MustCompile(`program (\w+)`)

// loadError names what a failed load lacks.
func loadError(err, memlockErr error) error {
	prog := "?"
	if m := programName.FindStringSubmatch(err.Error()); m != nil {
		prog = m[1]
	}
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		return &UnavailableError{Missing: "program " + prog + " refused by the verifier", Err: verifierExcerpt(ve)}
	case isPermission(err) && memlockErr != nil:
		return &UnavailableError{Missing: "permission to load BPF programs (CAP_BPF and CAP_PERFMON, or root; before Linux 5.11 also CAP_SYS_RESOURCE for RLIMIT_MEMLOCK)",
			Err: errors.Join(err, memlockErr)}
	case isPermission(err):
		return &UnavailableError{Missing: "permission to load BPF programs (CAP_BPF and CAP_PERFMON, or root)", Err: err}
	case errors.Is(err, os.ErrNotExist) && prog != "?":
		// Tracing programs resolve their attach point at load time.
		return &UnavailableError{Missing: "attach point of program " + prog, Err: err}
	default:
		return &UnavailableError{Missing: "kernel support for program " + prog, Err: err}
	}
}

func isPermission(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// verifierExcerpt keeps the first and last lines of a verifier log: the
// first say which program and instruction, the last why it was refused.
func verifierExcerpt(ve *ebpf.VerifierError) error {
	const keep = 8
	lines := ve.Log
	if len(lines) > 2*keep {
		lines = append(append(append([]string{}, lines[:keep]...), "..."), lines[len(lines)-keep:]...)
	}
	return fmt.Errorf("%w\n%s", ve, strings.Join(lines, "\n"))
}

// Track starts collection for a cgroup v2 id (the inode number of its
// directory).
func (c *Collector) Track(cgroupID uint64) error {
	if cgroupID == 0 {
		return errors.New("collect: track: cgroup id 0")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collect: track: collector closed")
	}
	if err := c.objs.Tracked.Update(cgroupID, uint32(1), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("collect: track cgroup %d: %d cgroups already tracked (MaxTracked)", cgroupID, c.opts.MaxTracked)
		}
		return fmt.Errorf("collect: track cgroup %d: %w", cgroupID, err)
	}
	c.tracked[cgroupID] = struct{}{}
	if err := c.writeTrackedBits(); err != nil {
		delete(c.tracked, cgroupID)
		_ = c.objs.Tracked.Delete(cgroupID)
		return fmt.Errorf("collect: track cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// trackedBits is the kernel's filter in front of the tracked map
// (tracked_bits in collect.bpf.c): the same multiplicative hash, 12 bits.
const trackedBits = 4096

func trackedBit(cgroupID uint64) uint32 { return uint32((cgroupID * 0x9E3779B97F4A7C15) >> (64 - 12)) }

// writeTrackedBits publishes a change of c.tracked (already in the tracked
// map) to the kernel's filter and generation.
func (c *Collector) writeTrackedBits() error {
	var bits [trackedBits / 64]uint64
	for id := range c.tracked {
		b := trackedBit(id)
		bits[b/64] |= 1 << (b % 64)
	}
	if err := c.objs.TrackedBits.Set(bits); err != nil {
		return fmt.Errorf("write tracked filter: %w", err)
	}
	// Threads cache whether their cgroup is tracked; a new generation makes
	// them look again.
	c.gen++
	if err := c.objs.TrackedGen.Set(c.gen); err != nil {
		return fmt.Errorf("write tracked generation: %w", err)
	}
	return nil
}

// Untrack stops collection for a cgroup and drops its undrained counters.
// Untracking a cgroup that is not tracked is not an error.
func (c *Collector) Untrack(cgroupID uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collect: untrack: collector closed")
	}
	if err := c.objs.Tracked.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("collect: untrack cgroup %d: %w", cgroupID, err)
	}
	delete(c.tracked, cgroupID)
	c.untracked[cgroupID] = struct{}{}
	if err := c.writeTrackedBits(); err != nil {
		return fmt.Errorf("collect: untrack cgroup %d: %w", cgroupID, err)
	}
	var (
		k    collectTrigramKey
		v    uint64
		drop []collectTrigramKey
	)
	it := c.objs.Trigrams.Iterate()
	for it.Next(&k, &v) {
		if k.Cgroup == cgroupID {
			drop = append(drop, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("collect: untrack cgroup %d: list counters: %w", cgroupID, err)
	}
	for _, k := range drop {
		if err := c.objs.Trigrams.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("collect: untrack cgroup %d: drop counters: %w", cgroupID, err)
		}
	}
	return nil
}

const drainBatch = 1024

// fastSlots is FAST_SLOTS in collect.bpf.c: slots per fast table and CPU.
const fastSlots = 2048

// fastSettle is how long a drain waits after switching fast tables before it
// reads the old one: a program that read fast_epoch just before the switch
// is done counting within microseconds.
const fastSettle = time.Millisecond

// DrainSyscalls returns, per tracked cgroup id, each trigram's count since
// the last drain, and removes them from the kernel. An increment racing with
// the drain of its counter can be lost; nothing is counted twice.
func (c *Collector) DrainSyscalls() (map[uint64]map[Trigram]uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("collect: drain: collector closed")
	}
	out := map[uint64]map[Trigram]uint64{}
	add := func(cg uint64, tri uint64, n uint64) {
		// A counter can land just after Untrack dropped its cgroup's.
		if _, ok := c.tracked[cg]; !ok || n == 0 {
			return
		}
		m := out[cg]
		if m == nil {
			m = map[Trigram]uint64{}
			out[cg] = m
		}
		m[trigramFromKey(tri)] += n
	}
	// The programs count into the other fast table from now on.
	old := c.objs.Fast0
	if c.epoch&1 == 1 {
		old = c.objs.Fast1
	}
	if err := c.objs.FastEpoch.Set(c.epoch + 1); err != nil {
		return nil, fmt.Errorf("collect: drain: switch fast table: %w", err)
	}
	c.epoch++
	time.Sleep(fastSettle)
	if err := c.takeFast(old, add); err != nil {
		return nil, err
	}
	clear(c.untracked)

	keys := make([]collectTrigramKey, drainBatch)
	vals := make([]uint64, drainBatch)
	var cursor ebpf.MapBatchCursor
	for {
		got, err := c.objs.Trigrams.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := range got {
			add(keys[i].Cgroup, keys[i].Trigram, vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("collect: drain trigram counters: %w", err)
		}
	}
	var n uint64
	for _, m := range out {
		n += uint64(len(m))
	}
	c.trigrams.Add(n)
	return out, nil
}

// takeFast passes every counted slot of a fast table that the programs no
// longer count into to add, except those of cgroups untracked since the last
// drain, and frees the slots.
func (c *Collector) takeFast(table *ebpf.Map, add func(cg, tri, n uint64)) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("collect: drain: %w", err)
	}
	keys := make([]uint32, fastSlots)
	for i := range keys {
		keys[i] = uint32(i)
	}
	// Slot i's values are vals[i*cpus : (i+1)*cpus], one per CPU.
	vals := make([]collectTrigramSlot, fastSlots*cpus)
	var cursor ebpf.MapBatchCursor
	got, err := table.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("collect: drain: read fast table: %w", err)
	}
	var used []uint32
	for i := range got {
		taken := false
		for _, v := range vals[i*cpus : (i+1)*cpus] {
			if v.Cgroup == 0 {
				continue
			}
			taken = true
			if _, gone := c.untracked[v.Cgroup]; !gone {
				add(v.Cgroup, v.Trigram, v.Count)
			}
		}
		if taken {
			used = append(used, keys[i])
		}
	}
	if len(used) == 0 {
		return nil
	}
	if _, err := table.BatchUpdate(used, make([]collectTrigramSlot, len(used)*cpus), nil); err != nil {
		return fmt.Errorf("collect: drain: free fast table: %w", err)
	}
	return nil
}

// Run sends the kernel's exec and connection records to out until ctx is
// done (then it returns nil) or the collector is closed. Malformed records are
// counted in Stats and skipped. Only one Run may be active at a time.
func (c *Collector) Run(ctx context.Context, out chan<- Event) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("collect: Run is already running")
	}
	defer c.running.Store(false)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			_ = c.rd.Flush() // wakes ReadInto: it returns what is buffered, then ErrFlushed
		case <-stop:
		}
	}()

	var rec ringbuf.Record
	for {
		if err := c.rd.ReadInto(&rec); err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			if errors.Is(err, ringbuf.ErrFlushed) {
				continue
			}
			return fmt.Errorf("collect: read ring buffer: %w", err)
		}
		ev, err := DecodeRecord(rec.RawSample)
		if err != nil {
			c.malformed.Add(1)
			continue
		}
		select { // the duty cycle attaches sys_enter at once
		case c.wake <- struct{}{}:
		default:
		}
		ev.Time = wallTime(ev.Mono)
		if ev.Exec != nil && len(ev.Exec.Args) > c.opts.ArgsMax {
			ev.Exec.Args = ev.Exec.Args[:c.opts.ArgsMax]
			ev.Exec.ArgsTruncated = true
		}
		select {
		case out <- ev:
			c.events.Add(1)
		case <-ctx.Done():
			return nil
		}
	}
}

// wallTime converts a CLOCK_MONOTONIC reading to wall-clock time.
func wallTime(mono time.Duration) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	return now.Add(mono - time.Duration(ts.Nano()))
}

// Stats returns the counters; Lost is read from the kernel.
func (c *Collector) Stats() Stats {
	s := Stats{Events: c.events.Load(), Malformed: c.malformed.Load(), Trigrams: c.trigrams.Load()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		var perCPU []uint64
		if err := c.objs.Lost.Lookup(uint32(0), &perCPU); err == nil {
			for _, v := range perCPU {
				s.Lost += v
			}
		}
	}
	return s
}

// Close detaches every program and frees the maps; a running Run returns.
func (c *Collector) Close() error {
	// Before c.mu: the duty cycle takes it to attach and detach.
	if c.stopDuty != nil {
		c.stopDuty()
		<-c.dutyDone
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, l := range c.links {
		errs = append(errs, l.Close())
	}
	c.links = nil
	if c.sysLink != nil {
		errs = append(errs, c.sysLink.Close())
		c.sysLink = nil
	}
	if c.rd != nil {
		errs = append(errs, c.rd.Close())
	}
	errs = append(errs, c.objs.Close())
	return errors.Join(errs...)
}

// programIDs lists the loaded programs' kernel ids (tests check that Close
// leaves no link to them).
func (c *Collector) programIDs() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{c.objs.SysEnter, c.objs.SchedProcessExec, c.objs.InetSockSetState, c.objs.NetDevQueue, c.objs.ExistingTcp} {
		info, err := p.Info()
		if err != nil {
			return nil, err
		}
		id, _ := info.ID()
		ids = append(ids, id)
	}
	return ids, nil
}
