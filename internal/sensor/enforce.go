package sensor

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// The cluster DNS that allowDNS keeps reachable: the kube-dns Service's
// cluster IPs (what a pod's resolv.conf names, seen before any DNAT by the
// pod's cgroup hooks) and its EndpointSlices' ready addresses.
const (
	DNSNamespace = "kube-system"
	DNSService   = "kube-dns"
	DNSPort      = 53
)

// Isolation decides whether a quarantined pod is to be isolated in the
// kernel, and whether DNS stays open: only for an existing, approved,
// unreleased Quarantine with an Isolate action that targets this pod. why
// says what is missing when it is not.
func Isolation(q *securityv1alpha1.Quarantine, pod *corev1.Pod) (allowDNS, isolate bool, why string) {
	switch {
	case q == nil:
		return false, false, "quarantine not found"
	case q.DeletionTimestamp != nil:
		return false, false, "quarantine is being deleted"
	case q.Spec.Released != nil && *q.Spec.Released:
		return false, false, "quarantine released"
	case q.Spec.Approved != nil && !*q.Spec.Approved:
		return false, false, "quarantine awaits approval"
	case q.Namespace != pod.Namespace:
		return false, false, "quarantine in another namespace"
	case q.Status.Phase == securityv1alpha1.PhaseFailed:
		return false, false, "quarantine failed"
	case q.Status.Phase == securityv1alpha1.PhaseReleasing || q.Status.Phase == securityv1alpha1.PhaseReleased:
		return false, false, "quarantine released"
	}
	if q.Spec.Target.Kind == securityv1alpha1.TargetPod || q.Spec.Target.Kind == "" {
		if q.Spec.Target.Name != pod.Name {
			return false, false, "quarantine targets another pod"
		}
		if t := q.Status.Target; t != nil && t.UID != "" && t.UID != string(pod.UID) {
			return false, false, "quarantine targets an earlier pod of that name"
		}
	}
	for _, act := range q.Spec.Actions {
		if act.Type == securityv1alpha1.ActionIsolate {
			return act.Isolate != nil && act.Isolate.AllowDNS, true, ""
		}
	}
	return false, false, "quarantine has no Isolate action"
}

// Protected reports whether Bulkhead never contains pods of namespace ns:
// the always-protected namespaces and the manager's own.
func Protected(ns, managerNamespace string) bool {
	return ns == managerNamespace || slices.Contains(securityv1alpha1.AlwaysProtectedNamespaces, ns)
}

// Wanted is a pod to isolate: the Quarantine named for it and the options
// every isolating Quarantine of the pod agrees on.
type Wanted struct {
	Pod        *corev1.Pod
	Quarantine string
	AllowDNS   bool
}

// WantedIsolations decides which of this node's pods are isolated in the
// kernel, from the pods and the cluster's Quarantines (both from the
// sensor's watches): a pod is isolated when a Quarantine that Isolation
// accepts either targets it directly (kind Pod, by name and, once resolved,
// by UID) or is named by its quarantine label (workload targets, whose pods
// only the manager resolves). The first path needs no label: the pod is
// isolated as soon as its Quarantine is seen. Pods in protected namespaces
// are never isolated. When several Quarantines isolate a pod, DNS stays
// open only if all of them allow it, so a hand-made Quarantine can make its
// pod's isolation stricter, never looser; the one named is the label's, or
// else the oldest. skipped says, per pod UID, why a pod some Quarantine
// names is not isolated.
func WantedIsolations(pods []corev1.Pod, quarantines []securityv1alpha1.Quarantine, managerNamespace string) (want map[string]Wanted, skipped map[string]string) {
	want, skipped = map[string]Wanted{}, map[string]string{}
	byName := make(map[string]*corev1.Pod, len(pods))
	for i := range pods {
		byName[pods[i].Namespace+"/"+pods[i].Name] = &pods[i]
	}
	byQ := make(map[string]*securityv1alpha1.Quarantine, len(quarantines))
	direct := map[string][]*securityv1alpha1.Quarantine{} // pod namespace/name
	for i := range quarantines {
		q := &quarantines[i]
		byQ[q.Namespace+"/"+q.Name] = q
		if k := q.Spec.Target.Kind; k == securityv1alpha1.TargetPod || k == "" {
			key := q.Namespace + "/" + q.Spec.Target.Name
			if byName[key] != nil {
				direct[key] = append(direct[key], q)
			}
		}
	}
	for i := range pods {
		p := &pods[i]
		key := p.Namespace + "/" + p.Name
		cands := direct[key]
		var labelled *securityv1alpha1.Quarantine
		if name, ok := p.Labels[securityv1alpha1.QuarantineLabel]; ok {
			labelled = byQ[p.Namespace+"/"+name]
			if labelled == nil {
				skipped[string(p.UID)] = "quarantine " + name + " of the label not found"
			} else if !slices.Contains(cands, labelled) {
				cands = append([]*securityv1alpha1.Quarantine{labelled}, cands...)
			}
		}
		if len(cands) == 0 {
			continue
		}
		if Protected(p.Namespace, managerNamespace) {
			skipped[string(p.UID)] = "namespace " + p.Namespace + " is protected"
			continue
		}
		var (
			named    *securityv1alpha1.Quarantine
			allowDNS = true
			whys     []string
		)
		for _, q := range cands {
			dns, ok, why := Isolation(q, p)
			if !ok {
				whys = append(whys, q.Name+": "+why)
				continue
			}
			allowDNS = allowDNS && dns
			switch {
			case named == nil, q == labelled:
				named = q
			case named != labelled && olderThan(q, named):
				named = q
			}
		}
		if named == nil {
			skipped[string(p.UID)] = strings.Join(whys, "; ")
			continue
		}
		delete(skipped, string(p.UID))
		want[string(p.UID)] = Wanted{Pod: p, Quarantine: named.Name, AllowDNS: allowDNS}
	}
	return want, skipped
}

func olderThan(a, b *securityv1alpha1.Quarantine) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// enforcement keeps the kernel isolation of this node's pods equal to the
// API state (WantedIsolations).
type enforcement struct {
	a *Agent

	mu    sync.Mutex
	state map[string]*enfRecord // pod UID
	// busy are the pods whose isolation is being finished (sockets cut)
	// in the background; cuts waits for those goroutines and cutters runs
	// them, a few at a time.
	busy    map[string]string // pod UID -> its cgroup
	cuts    sync.WaitGroup
	cutters *cutters

	dns       []netip.AddrPort
	dnsAt     time.Time
	reconAt   time.Time
	reconDone bool
}

type enfRecord struct {
	namespace, pod, uid, quarantine, path string
	opts                                  IsolateOptions
	result                                IsolateResult
	enforced                              bool
	reason                                string
	at                                    time.Time
}

func newEnforcement(a *Agent) *enforcement {
	return &enforcement{a: a, state: map[string]*enfRecord{}, busy: map[string]string{}}
}

func (e *enforcement) run(ctx context.Context) {
	t := time.NewTicker(e.a.cfg.EnforceResync)
	defer t.Stop()
	e.cutters = startCutters(e.a.cfg.EnforceWorkers, lowerPriority)
	defer func() {
		e.cuts.Wait()
		e.cutters.stop()
	}()
	for {
		e.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.a.quarEvents:
		}
	}
}

type desired struct {
	pod        *corev1.Pod
	quarantine string
	opts       IsolateOptions
}

// sync applies the difference between the API state and what is enforced.
func (e *enforcement) sync(ctx context.Context) {
	a := e.a
	start := a.now()
	// Read-only views of the caches: a burst lists hundreds of Quarantines
	// per sync, and copying them all each time is not needed.
	var pods corev1.PodList
	if err := a.cache.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		a.log.Error(err, "listing the node's pods")
		return
	}
	var qs securityv1alpha1.QuarantineList
	if err := a.cache.List(ctx, &qs, client.UnsafeDisableDeepCopy); err != nil {
		// Unknown state: keep whatever is enforced now.
		a.log.Error(err, "listing quarantines")
		return
	}
	wanted, skipped := WantedIsolations(pods.Items, qs.Items, a.cfg.ManagerNamespace)
	want := make(map[string]desired, len(wanted))
	for uid, w := range wanted {
		d := desired{pod: w.Pod, quarantine: w.Quarantine, opts: IsolateOptions{AllowDNS: w.AllowDNS}}
		if w.AllowDNS {
			d.opts.DNS = e.dnsEndpoints(ctx)
		}
		want[uid] = d
	}
	changed := e.apply(ctx, want, start)
	if changed {
		a.sender.Kick()
	}
	if len(skipped) > 0 {
		a.log.V(1).Info("quarantined pods not isolated in the kernel", "why", skipped)
	}
}

func (e *enforcement) get(uid string) *enfRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state[uid]
}

// busyPath is the cgroup of a pod whose cut runs, or "".
func (e *enforcement) busyPath(uid string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.busy[uid]
}

func (e *enforcement) put(r *enfRecord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.state[r.uid] = r
}

func (e *enforcement) drop(uid string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.state, uid)
}

// apply isolates wanted pods and releases the others; it reports whether
// the enforcement state changed. syncStart is when the sync that computed
// want began (logged, to tell the API reads from Isolate itself).
func (e *enforcement) apply(ctx context.Context, want map[string]desired, syncStart time.Time) bool {
	a := e.a
	now := a.now()
	changed := false
	paths := map[string]string{} // uid -> pod cgroup
	var lookup []string
	for uid := range want {
		if p := e.busyPath(uid); p != "" {
			paths[uid] = p
			continue
		}
		// A pod isolated before keeps its cgroup.
		if old := e.get(uid); old != nil && old.path != "" && a.cgroupExists(old.path) {
			paths[uid] = old.path
			continue
		}
		if p := a.knownPodCgroup(uid); p != "" {
			paths[uid] = p
			continue
		}
		lookup = append(lookup, uid)
	}
	if len(lookup) > 0 {
		// One walk of the node's cgroup tree for all new pods: a walk per
		// pod made a burst of 50 pods cost seconds per sync.
		index, err := a.be.Containers.PodCgroups(a.cfg.CgroupRoot)
		for _, uid := range lookup {
			d := want[uid]
			path, ok := index[uid]
			if err == nil && ok {
				paths[uid] = path
				continue
			}
			why := "pod cgroup not found on this node"
			if err != nil {
				why += ": " + err.Error()
			}
			rec := &enfRecord{namespace: d.pod.Namespace, pod: d.pod.Name, uid: uid, quarantine: d.quarantine, opts: d.opts, reason: why, at: now}
			if old := e.get(uid); old == nil || old.reason != rec.reason {
				changed = true
			}
			e.put(rec)
		}
	}
	enf := a.be.Enforcer
	if enf == nil {
		why := "kernel enforcement unavailable"
		if a.be.EnforcerErr != nil {
			why += ": " + a.be.EnforcerErr.Error()
		}
		for uid, d := range want {
			if _, ok := paths[uid]; ok {
				if old := e.get(uid); old == nil || old.reason != why {
					changed = true
				}
				e.put(&enfRecord{namespace: d.pod.Namespace, pod: d.pod.Name, uid: uid, quarantine: d.quarantine, opts: d.opts, reason: why, at: now})
			}
		}
		changed = e.forgetUnwanted(want) || changed
		return changed
	}
	// After a (re)start, and now and then, make the kernel hold exactly what
	// the API says: this releases what a crash left attached.
	if !e.reconDone || now.Sub(e.reconAt) >= a.cfg.ReconcileInterval {
		m := map[string]IsolateOptions{}
		for uid, p := range paths {
			m[p] = want[uid].opts
		}
		applied, released, err := enf.Reconcile(m)
		if err != nil {
			a.log.Error(err, "reconciling kernel enforcement")
		} else {
			e.reconDone, e.reconAt = true, now
			if len(applied)+len(released) > 0 {
				a.log.Info("reconciled kernel enforcement", "applied", applied, "released", released)
			}
		}
	}
	var todo []string
	for uid, path := range paths {
		d := want[uid]
		old := e.get(uid)
		if old != nil && old.enforced && old.path == path && sameOptions(old.opts, d.opts) && old.quarantine == d.quarantine {
			continue
		}
		if e.busyPath(uid) != "" {
			continue // its cut's end triggers another sync
		}
		todo = append(todo, uid)
	}
	if len(todo) > 0 {
		changed = true
	}
	// A burst brings many pods in one sync: attach to them a few at a time
	// (the Enforcer runs different cgroups in parallel) rather than one
	// after another, and cut no socket before every pod of the sync is
	// attached, so each pod's packets are dropped (established
	// connections' too) without waiting for the others' cuts. The cuts
	// finish in the background: the next sync does not wait for them.
	began := make(map[string]time.Time, len(todo))
	attachDone := make(map[string]time.Time, len(todo))
	var mu sync.Mutex
	parallel(todo, a.cfg.EnforceWorkers, func(uid string) {
		d, path := want[uid], paths[uid]
		t0 := a.now()
		if _, err := enf.Attach(path, d.opts); err != nil {
			// Isolate below retries it all and records the error.
			a.log.Error(err, "attaching the isolation in the kernel", "pod", d.pod.Namespace+"/"+d.pod.Name)
		}
		t1 := a.now()
		mu.Lock()
		began[uid], attachDone[uid] = t0, t1
		mu.Unlock()
	})
	for _, uid := range todo {
		d, path, t0, t1 := want[uid], paths[uid], began[uid], attachDone[uid]
		e.mu.Lock()
		e.busy[uid] = path
		e.mu.Unlock()
		e.cuts.Go(func() {
			var (
				res IsolateResult
				err error
			)
			e.cutters.do(func() { res, err = enf.Isolate(path, d.opts) })
			rec := &enfRecord{namespace: d.pod.Namespace, pod: d.pod.Name, uid: uid, quarantine: d.quarantine,
				path: path, opts: d.opts, result: res, enforced: err == nil, reason: res.Reason, at: a.now()}
			if err != nil {
				rec.reason = err.Error()
				a.log.Error(err, "isolating pod in the kernel", "pod", d.pod.Namespace+"/"+d.pod.Name)
			} else {
				// sinceSyncStart and attachSeconds tell where the time
				// between the pod event and the drop went (make bench-drop
				// reads them); isolateSeconds runs from Attach's start to
				// the end of the cut.
				a.log.Info("isolated pod in the kernel", "pod", d.pod.Namespace+"/"+d.pod.Name, "quarantine", d.quarantine,
					"allowDNS", d.opts.AllowDNS, "programs", res.Programs, "socketsDestroyed", res.SocketsDestroyed, "method", res.Method,
					"sinceSyncStartSeconds", t0.Sub(syncStart).Seconds(), "attachSeconds", t1.Sub(t0).Seconds(), "isolateSeconds", rec.at.Sub(t0).Seconds())
			}
			e.mu.Lock()
			e.state[uid] = rec
			delete(e.busy, uid)
			e.mu.Unlock()
			// Report it, and look again: the pod may be unwanted by now.
			a.sender.Kick()
			notify(a.quarEvents)
		})
	}
	e.mu.Lock()
	var gone []*enfRecord
	for uid, r := range e.state {
		if _, ok := want[uid]; !ok && e.busy[uid] == "" {
			gone = append(gone, r)
		}
	}
	e.mu.Unlock()
	for _, r := range gone {
		changed = true
		if r.path == "" {
			e.drop(r.uid)
			continue
		}
		err := enf.Release(r.path)
		if err == nil {
			a.log.Info("released pod in the kernel", "pod", r.namespace+"/"+r.pod, "quarantine", r.quarantine)
			e.drop(r.uid)
			continue
		}
		var p corev1.Pod
		if gerr := a.cache.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: r.pod}, &p); apierrors.IsNotFound(gerr) || (gerr == nil && string(p.UID) != r.uid) {
			// The pod and its cgroup are gone; Reconcile clears any pin left.
			e.drop(r.uid)
			continue
		}
		a.log.Error(err, "releasing pod in the kernel; retrying", "pod", r.namespace+"/"+r.pod)
		r2 := *r
		r2.reason = "release failed: " + err.Error()
		e.put(&r2)
	}
	return changed
}

// cutNice is the nice value of the threads that cut sockets. A cut walks
// the kernel's whole socket tables (about 1 ms of CPU per table on a host
// with 262144 TCP hash buckets, more while several run), and a burst brings
// hundreds; the pod's packets are already dropped when it starts, so it can
// wait for the node's workloads — and, on a small node, its API server and
// the sensor's own attaches — instead of competing with them.
const cutNice = 10

// cutters are a few goroutines, each locked to its own thread, lowered
// once to cutNice for as long as the enforcement runs. Lowering a thread
// needs no privilege, but raising it back needs CAP_SYS_NICE, which the
// sensor does not have: restoring after every cut would fail and end a
// thread per cut.
type cutters struct {
	work chan func()
	wg   sync.WaitGroup
}

func startCutters(n int, lower func() (restore func())) *cutters {
	c := &cutters{work: make(chan func())}
	for range max(n, 1) {
		c.wg.Go(func() {
			defer lower()()
			for f := range c.work {
				f()
			}
		})
	}
	return c
}

// do runs f on a cutter and returns when it has.
func (c *cutters) do(f func()) {
	done := make(chan struct{})
	c.work <- func() {
		defer close(done)
		f()
	}
	<-done
}

// stop ends the cutters once no do is running or waiting.
func (c *cutters) stop() {
	close(c.work)
	c.wg.Wait()
}

// lowerPriority runs the calling goroutine on its thread at cutNice (or
// leaves it lower) until the returned func restores the thread's priority
// and unlocks it. A thread
// whose priority cannot be restored (no CAP_SYS_NICE) stays locked, so Go
// ends it with the goroutine rather than hand the lowered priority to
// others. (Ending every cutting thread instead would also fire the
// parent-death signal of any child process that thread had started.)
func lowerPriority() (restore func()) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	// Linux's getpriority(2) system call returns 20 - nice.
	old = 20 - old
	if old >= cutNice {
		runtime.UnlockOSThread()
		return func() {} // already as low (a sensor started with nice)
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, cutNice); err != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		if unix.Setpriority(unix.PRIO_PROCESS, tid, old) == nil {
			runtime.UnlockOSThread()
		}
	}
}

// parallel calls f for each item on at most workers goroutines and returns
// when all calls have.
func parallel(items []string, workers int, f func(string)) {
	if workers > len(items) {
		workers = len(items)
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for it := range work {
				f(it)
			}
		})
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
}

// forgetUnwanted drops records of pods no longer wanted (no enforcer: nothing to release).
func (e *enforcement) forgetUnwanted(want map[string]desired) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for uid := range e.state {
		if _, ok := want[uid]; !ok {
			delete(e.state, uid)
			changed = true
		}
	}
	return changed
}

func sameOptions(a, b IsolateOptions) bool {
	return a.AllowDNS == b.AllowDNS && slices.Equal(a.DNS, b.DNS)
}

// dnsEndpoints returns the cluster DNS addresses, cached for DNSCacheTTL.
func (e *enforcement) dnsEndpoints(ctx context.Context) []netip.AddrPort {
	a := e.a
	if e.dns != nil && a.now().Sub(e.dnsAt) < a.cfg.DNSCacheTTL {
		return e.dns
	}
	got, err := ClusterDNS(ctx, a.api)
	if err != nil {
		a.log.Error(err, "reading the cluster DNS endpoints")
		return e.dns // the last known ones
	}
	e.dns, e.dnsAt = got, a.now()
	return got
}

// ClusterDNS returns the kube-dns Service's cluster IPs on port 53 and its
// ready endpoints on their ports, sorted and without duplicates.
func ClusterDNS(ctx context.Context, r client.Reader) ([]netip.AddrPort, error) {
	set := map[netip.AddrPort]bool{}
	var svc corev1.Service
	err := r.Get(ctx, client.ObjectKey{Namespace: DNSNamespace, Name: DNSService}, &svc)
	if client.IgnoreNotFound(err) != nil {
		return nil, err
	}
	for _, ip := range svc.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			set[netip.AddrPortFrom(a, DNSPort)] = true
		}
	}
	var list discoveryv1.EndpointSliceList
	if err := r.List(ctx, &list, client.InNamespace(DNSNamespace), client.MatchingLabels{discoveryv1.LabelServiceName: DNSService}); err != nil {
		return nil, err
	}
	for _, s := range list.Items {
		ports := []uint16{}
		for _, p := range s.Ports {
			if p.Port != nil && *p.Port > 0 && *p.Port < 1<<16 {
				ports = append(ports, uint16(*p.Port))
			}
		}
		if len(ports) == 0 {
			ports = append(ports, DNSPort)
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, addr := range ep.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					continue
				}
				for _, port := range ports {
					set[netip.AddrPortFrom(a, port)] = true
				}
			}
		}
	}
	if len(set) == 0 {
		return nil, errors.New("no kube-dns Service or ready endpoints in kube-system")
	}
	out := make([]netip.AddrPort, 0, len(set))
	for ap := range set {
		out = append(out, ap)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out, nil
}

// report is the enforcement state for the manager.
func (e *enforcement) report() []wire.Enforcement {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]wire.Enforcement, 0, len(e.state))
	for _, r := range e.state {
		progs := r.result.Programs
		if progs == nil {
			progs = []string{}
		}
		out = append(out, wire.Enforcement{
			Namespace: r.namespace, Pod: r.pod, Quarantine: r.quarantine, Enforced: r.enforced,
			Programs: progs, ConnCut: r.result.ConnCut, SocketsDestroyed: r.result.SocketsDestroyed,
			Method: r.result.Method, Reason: r.reason, Time: r.at.UTC(),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Pod < out[j].Pod
	})
	return out
}
