package enforce

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// normalize validates options and returns them in canonical form (sorted,
// deduplicated DNS; none unless AllowDNS), so equal intents compare equal.
func normalize(o Options) (Options, error) {
	if !o.AllowDNS {
		return Options{}, nil
	}
	if len(o.DNS) == 0 {
		return Options{}, errors.New("allowDNS needs at least one DNS endpoint")
	}
	var dns []netip.AddrPort
	for _, ap := range o.DNS {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return Options{}, fmt.Errorf("invalid DNS endpoint %q: need an address and a port", ap)
		}
		ap = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
		if !slices.Contains(dns, ap) {
			dns = append(dns, ap)
		}
	}
	if len(dns) > MaxDNS {
		return Options{}, fmt.Errorf("%d DNS endpoints, at most %d", len(dns), MaxDNS)
	}
	slices.SortFunc(dns, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return Options{AllowDNS: true, DNS: dns}, nil
}

func (e *Enforcer) step(name string) {
	if e.crash != nil {
		e.crash(name)
	}
}

// Isolate attaches the enforcement programs to the cgroup v2 directory
// cgroupPath, pins them, and destroys the cgroup's established sockets.
// Calling it again with the same options changes nothing already in place
// (it only cuts sockets again, of which there should be none); with other
// options it updates the allowed DNS endpoints.
func (e *Enforcer) Isolate(cgroupPath string, o Options) (Result, error) {
	return e.isolate(cgroupPath, o, true)
}

// Attach is the first part of Isolate: it records the intent and attaches
// and pins the programs, so the cgroup's packets are dropped once it
// returns, but cuts no socket and leaves the isolation incomplete. Isolate
// on the same cgroup finishes it (a crash in between leaves an incomplete
// isolation that Reconcile finishes). A burst attaches to every pod first,
// then cuts: each pod's traffic stops without waiting for the others' cuts.
func (e *Enforcer) Attach(cgroupPath string, o Options) (Result, error) {
	return e.isolate(cgroupPath, o, false)
}

func (e *Enforcer) isolate(cgroupPath string, o Options, finish bool) (Result, error) {
	o, err := normalize(o)
	if err != nil {
		return Result{}, err
	}
	cgid, err := cgroupID(cgroupPath)
	if err != nil {
		return Result{}, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return Result{}, errClosed
	}
	defer e.cgroups.lock(cgid)()

	res := Result{CgroupID: cgid}
	dir := e.dir(cgid)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return res, fmt.Errorf("pin directory: %w", err)
	}
	e.step("mkdir")
	removeTemps(dir)

	// Record the intent before attaching anything.
	old, err := readIntent(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// A corrupt intent is replaced: the new one says what is wanted.
		old = intent{}
	}
	want := intent{Path: cgroupPath, Options: o}
	sameOptions := old.Path == want.Path && optionsEqual(old.Options, want.Options)
	if !sameOptions || err != nil {
		if err := writeIntent(dir, want); err != nil {
			return res, err
		}
	}
	e.step("intent")

	allow, err := loadOrCreateMap(dir, allowPin, e.spec.Maps["allow"])
	if err != nil {
		return res, err
	}
	defer allow.Close()
	counters, err := loadOrCreateMap(dir, countersPin, e.spec.Maps["counters"])
	if err != nil {
		return res, err
	}
	defer counters.Close()
	if err := syncAllow(allow, o); err != nil {
		return res, err
	}
	e.step("maps")

	if err := e.attach(cgroupPath, dir, allow, counters); err != nil {
		return res, err
	}
	for _, p := range programs {
		res.Programs = append(res.Programs, p.section)
	}
	e.step("attached")
	// An isolation made by an earlier version: its sock_addr links go
	// once the cgroup_skb ones are in place.
	if err := e.unpinLinks(dir, legacyPrograms); err != nil {
		return res, err
	}
	if !finish {
		return res, nil
	}

	e.cutSockets(cgroupPath, cgid, o, &res)
	e.step("cut")

	if !old.Done || !sameOptions {
		want.Done = true
		if err := writeIntent(dir, want); err != nil {
			return res, err
		}
	}
	return res, nil
}

// attach attaches and pins every program whose link is not pinned yet.
func (e *Enforcer) attach(cgroupPath, dir string, allow, counters *ebpf.Map) error {
	var missing []program
	for _, p := range programs {
		l, err := link.LoadPinnedLink(filepath.Join(dir, p.pinName()), nil)
		if err == nil {
			l.Close()
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pinned link %s: %w", p.section, err)
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return nil
	}
	objs, err := e.loadPrograms(allow, counters)
	if err != nil {
		return fmt.Errorf("load programs: %w", err)
	}
	defer objs.Close()
	for _, p := range missing {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: p.attach, Program: objs.progs[p.obj]})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", p.section, cgroupPath, err)
		}
		e.step("attach " + p.section)
		// Until it is pinned the link lives only in this process: a crash
		// here detaches it.
		err = l.Pin(filepath.Join(dir, p.pinName()))
		l.Close()
		if err != nil {
			return fmt.Errorf("pin %s: %w", p.section, err)
		}
		e.step("pin " + p.section)
	}
	return nil
}

// syncAllow makes the allow map hold exactly the options' endpoints.
func syncAllow(m *ebpf.Map, o Options) error {
	want := map[enforceEndpoint]bool{}
	for _, ap := range o.DNS {
		want[endpointKey(ap)] = true
	}
	var (
		k     enforceEndpoint
		v     uint8
		stale []enforceEndpoint
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
		delete(want, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read allowed endpoints: %w", err)
	}
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("allow DNS endpoint: %w", err)
		}
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove DNS endpoint: %w", err)
		}
	}
	return nil
}

func optionsEqual(a, b Options) bool {
	return a.AllowDNS == b.AllowDNS && slices.Equal(a.DNS, b.DNS)
}

// removeTemps removes pins left under a temporary name by a crash.
func removeTemps(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), tmpPrefix) {
			_ = os.Remove(filepath.Join(dir, ent.Name()))
		}
	}
}

// Release detaches exactly what Isolate attached to cgroupPath and removes
// its pins. Releasing a cgroup that is not isolated does nothing. It works
// from the pins alone, also after a restart or when the cgroup is gone.
func (e *Enforcer) Release(cgroupPath string) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return errClosed
	}
	cgid, err := cgroupID(cgroupPath)
	if err == nil {
		if err := e.releaseLocked(cgid); err != nil {
			return err
		}
	}
	// Also release isolations recorded under this path for a cgroup that is
	// gone (or was recreated under the same path with a new id).
	isos, lerr := e.list()
	if lerr != nil {
		return lerr
	}
	found := false
	for _, iso := range isos {
		if iso.Path == cgroupPath {
			if err := e.releaseLocked(iso.CgroupID); err != nil {
				return err
			}
			found = true
		}
	}
	if err != nil && !found && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// unpinLinks detaches and unpins the links of progs pinned in dir; a
// program without a pin is skipped.
func (e *Enforcer) unpinLinks(dir string, progs []program) error {
	var errs []error
	for _, p := range progs {
		path := filepath.Join(dir, p.pinName())
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			// Detach even if some other process still holds the link.
			if derr := l.Detach(); derr != nil && !errors.Is(derr, link.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("detach %s: %w", p.section, derr))
			}
			l.Close()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p.section, err))
		}
		e.step("unpin " + p.section)
	}
	return errors.Join(errs...)
}

// releaseLocked is release under cgid's lock; the caller holds e.mu shared.
func (e *Enforcer) releaseLocked(cgid uint64) error {
	defer e.cgroups.lock(cgid)()
	return e.release(cgid)
}

// release removes one isolation: links first (each unpinned link is
// detached), then maps, then the intent, then the directory. A crash in
// between leaves a directory that List shows and Reconcile finishes.
func (e *Enforcer) release(cgid uint64) error {
	dir := e.dir(cgid)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	removeTemps(dir)
	if err := e.unpinLinks(dir, append(slices.Clone(programs), legacyPrograms...)); err != nil {
		return err
	}
	for _, name := range []string{allowPin, countersPin, metaPin} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin %s: %w", name, err)
		}
		e.step("unpin " + name)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s (unknown pins left in it?): %w", dir, err)
	}
	return nil
}

// List returns the isolations recorded in the pin directory, complete or
// left half-done by a crash.
func (e *Enforcer) List() ([]Isolation, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.list()
}

func (e *Enforcer) list() ([]Isolation, error) {
	ents, err := os.ReadDir(e.pinDir)
	if err != nil {
		return nil, err
	}
	var out []Isolation
	for _, ent := range ents {
		cgid, ok := parseID(ent.Name())
		if !ok || !ent.IsDir() {
			continue
		}
		dir := e.dir(cgid)
		iso := Isolation{CgroupID: cgid}
		in, err := readIntent(dir)
		if err == nil {
			iso.Path, iso.Options = in.Path, in.Options
		}
		legacy := 0
		for i, p := range append(slices.Clone(programs), legacyPrograms...) {
			if _, err := os.Stat(filepath.Join(dir, p.pinName())); err == nil {
				iso.Programs = append(iso.Programs, p.section)
				if i >= len(programs) {
					legacy++
				}
			}
		}
		// Legacy links make it incomplete, so Reconcile re-applies it
		// without them.
		iso.Complete = err == nil && in.Done && legacy == 0 && len(iso.Programs) == len(programs)
		out = append(out, iso)
	}
	return out, nil
}

// Reconcile makes the pinned isolations match want (cgroup path → options):
// it releases every pinned isolation whose cgroup is not wanted (also those
// whose cgroup is gone, or whose intent a crash left unrecorded), and
// isolates every wanted cgroup that is not completely isolated with the
// wanted options. A wanted cgroup that does not exist is reported in err
// and the others are still reconciled.
func (e *Enforcer) Reconcile(want map[string]Options) (applied, released []string, err error) {
	var errs []error
	wantIDs := map[uint64]string{}
	for path := range want {
		cgid, err := cgroupID(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		wantIDs[cgid] = path
	}
	isos, err := e.List()
	if err != nil {
		return nil, nil, err
	}
	have := map[uint64]Isolation{}
	for _, iso := range isos {
		if _, ok := wantIDs[iso.CgroupID]; ok {
			have[iso.CgroupID] = iso
			continue
		}
		err := e.releaseShared(iso.CgroupID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := iso.Path
		if name == "" {
			name = fmt.Sprintf("cgroup-id:%d", iso.CgroupID)
		}
		released = append(released, name)
	}
	for cgid, path := range wantIDs {
		o, _ := normalize(want[path])
		if iso, ok := have[cgid]; ok && iso.Complete && iso.Path == path && optionsEqual(iso.Options, o) {
			continue
		}
		if _, err := e.Isolate(path, want[path]); err != nil {
			errs = append(errs, fmt.Errorf("isolate %s: %w", path, err))
			continue
		}
		applied = append(applied, path)
	}
	slices.Sort(applied)
	slices.Sort(released)
	return applied, released, errors.Join(errs...)
}

// releaseShared is release for a caller that holds no lock.
func (e *Enforcer) releaseShared(cgid uint64) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return errClosed
	}
	return e.releaseLocked(cgid)
}

// Drops returns how many packets the isolation of cgroup cgid dropped
// (both directions; slots 2 and 3 hold what earlier versions' sock_addr
// programs refused).
func (e *Enforcer) Drops(cgroupID uint64) (uint64, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(e.dir(cgroupID), countersPin), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("cgroup %d is not isolated: %w", cgroupID, err)
	}
	defer m.Close()
	var total uint64
	for i := uint32(0); i < 4; i++ {
		var v uint64
		if err := m.Lookup(i, &v); err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

func parseID(s string) (uint64, bool) {
	var id uint64
	if s == "" {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		id = id*10 + uint64(c-'0')
	}
	return id, true
}
