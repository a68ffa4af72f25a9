package sensor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

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

// enforcement keeps the kernel isolation of this node's pods equal to the
// API state: pods labelled with a Quarantine that isolates them.
type enforcement struct {
	a *Agent

	mu    sync.Mutex
	state map[string]*enfRecord // pod UID

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
	return &enforcement{a: a, state: map[string]*enfRecord{}}
}

func (e *enforcement) run(ctx context.Context) {
	t := time.NewTicker(e.a.cfg.EnforceResync)
	defer t.Stop()
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
	var list corev1.PodList
	if err := a.cache.List(ctx, &list, client.HasLabels{securityv1alpha1.QuarantineLabel}); err != nil {
		a.log.Error(err, "listing quarantined pods")
		return
	}
	want := map[string]desired{}
	skipped := map[string]string{} // uid -> why a labelled pod is not isolated
	for i := range list.Items {
		p := &list.Items[i]
		name := p.Labels[securityv1alpha1.QuarantineLabel]
		var q securityv1alpha1.Quarantine
		err := a.cache.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: name}, &q)
		var qp *securityv1alpha1.Quarantine
		switch {
		case err == nil:
			qp = &q
		case !apierrors.IsNotFound(err):
			// Unknown state: keep whatever is enforced now.
			a.log.Error(err, "reading quarantine", "namespace", p.Namespace, "name", name)
			if r := e.get(string(p.UID)); r != nil {
				want[string(p.UID)] = desired{pod: p, quarantine: r.quarantine, opts: r.opts}
			}
			continue
		}
		allowDNS, ok, why := Isolation(qp, p)
		if !ok {
			skipped[string(p.UID)] = why
			continue
		}
		d := desired{pod: p, quarantine: name, opts: IsolateOptions{AllowDNS: allowDNS}}
		if allowDNS {
			d.opts.DNS = e.dnsEndpoints(ctx)
		}
		want[string(p.UID)] = d
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
	for uid, d := range want {
		// A pod isolated before keeps its cgroup: looking it up again walks
		// the node's whole cgroup tree, once per isolated pod per sync
		// (seconds per sync with 50 isolated pods, measured by bench-drop).
		if old := e.get(uid); old != nil && old.path != "" {
			if st, err := os.Stat(filepath.Join(a.cfg.CgroupRoot, old.path)); err == nil && st.IsDir() {
				paths[uid] = old.path
				continue
			}
		}
		path, _, err := a.be.Containers.PodCgroup(a.cfg.CgroupRoot, uid)
		if err != nil {
			rec := &enfRecord{namespace: d.pod.Namespace, pod: d.pod.Name, uid: uid, quarantine: d.quarantine, opts: d.opts,
				reason: "pod cgroup not found on this node: " + err.Error(), at: now}
			if old := e.get(uid); old == nil || old.reason != rec.reason {
				changed = true
			}
			e.put(rec)
			continue
		}
		paths[uid] = path
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
	for uid, path := range paths {
		d := want[uid]
		old := e.get(uid)
		if old != nil && old.enforced && old.path == path && sameOptions(old.opts, d.opts) && old.quarantine == d.quarantine {
			continue
		}
		began := a.now()
		res, err := enf.Isolate(path, d.opts)
		rec := &enfRecord{namespace: d.pod.Namespace, pod: d.pod.Name, uid: uid, quarantine: d.quarantine,
			path: path, opts: d.opts, result: res, enforced: err == nil, reason: res.Reason, at: a.now()}
		if err != nil {
			rec.reason = err.Error()
			a.log.Error(err, "isolating pod in the kernel", "pod", d.pod.Namespace+"/"+d.pod.Name)
		} else {
			// The two durations tell where the time between the pod event
			// and the drop went (make bench-drop reads them).
			a.log.Info("isolated pod in the kernel", "pod", d.pod.Namespace+"/"+d.pod.Name, "quarantine", d.quarantine,
				"allowDNS", d.opts.AllowDNS, "programs", res.Programs, "socketsDestroyed", res.SocketsDestroyed, "method", res.Method,
				"sinceSyncStartSeconds", began.Sub(syncStart).Seconds(), "isolateSeconds", rec.at.Sub(began).Seconds())
		}
		e.put(rec)
		changed = true
	}
	e.mu.Lock()
	var gone []*enfRecord
	for uid, r := range e.state {
		if _, ok := want[uid]; !ok {
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
