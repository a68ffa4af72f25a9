package quarantine

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// staleFor bounds how long a copy this controller wrote (or was handed)
// stands in for a cache that has not caught up: beyond it the cache is
// trusted again, whatever it shows.
const staleFor = 30 * time.Second

// Handoff carries the Quarantines the manager's policies create to this
// controller the moment the API server answers the create. In a burst the
// watch delivers a new Quarantine a second or more after it exists (the
// API server is busy with the burst itself), and until then nothing holds
// the earlier Quarantines' status and evidence writes behind its isolation
// (issue 17). cmd wires the policy controller's creates to it.
type Handoff struct {
	ch      chan event.GenericEvent
	waiting *unisolated
	written *written
}

// NewHandoff returns an empty Handoff.
func NewHandoff() *Handoff {
	return &Handoff{ch: make(chan event.GenericEvent, 4096), waiting: &unisolated{}, written: &written{}}
}

// Creating says a create of key is on its way: the Quarantines already
// created hold their later writes until it is isolated too, or abandoned.
func (h *Handoff) Creating(key types.NamespacedName) {
	h.waiting.hand(key)
}

// Abandoned says the create of key failed or took another name.
func (h *Handoff) Abandoned(key types.NamespacedName) {
	h.waiting.abandon(key)
}

// Created hands over q as the API server returned it: its first pass
// starts now, from this copy if the cache does not have it yet. after,
// when set, runs once q is isolated and no other new Quarantine waits for
// its isolation (the policy's Event about the create: Events are writes
// too, and in a burst 200 of them compete with the isolating writes).
func (h *Handoff) Created(q *securityv1alpha1.Quarantine, after func()) {
	key := types.NamespacedName{Namespace: q.Namespace, Name: q.Name}
	h.waiting.hand(key)
	h.written.record(key, "", q.DeepCopy())
	if after != nil {
		h.waiting.afterFirstPass(key, after)
	}
	select {
	case h.ch <- event.GenericEvent{Object: q.DeepCopy()}:
	default:
		// Full: the watch brings it, a little later.
	}
}

// written keeps, per Quarantine, the object as this controller's last own
// write returned it (or as its create did) and the resourceVersion that
// write replaced ("" for a create). A pass that finds the cache still at
// that older version — or, for a create, not yet holding the object —
// starts from the written copy instead: otherwise its optimistically
// locked status patch goes to the API server only to come back a conflict,
// and again on every retry until the watch catches up (3 conflicts per
// Quarantine in a 200 burst).
type written struct {
	mu sync.Mutex
	m  map[types.NamespacedName]writtenCopy
}

type writtenCopy struct {
	// replaced are the resourceVersions the chain of writes that led to q
	// replaced, oldest first ("" for a create): a pass may write twice
	// (finalizer, then status) while the cache still shows the first.
	replaced []string
	q        *securityv1alpha1.Quarantine
	at       time.Time
}

// pruneStale drops the entries of m older than staleFor once it holds
// 1024 (entries whose object never came back through the cache).
func pruneStale[V any](m map[types.NamespacedName]V, now time.Time, at func(V) time.Time) {
	if len(m) < 1024 {
		return
	}
	for k, v := range m {
		if now.Sub(at(v)) > staleFor {
			delete(m, k)
		}
	}
}

// maxChain bounds the versions a written copy remembers.
const maxChain = 8

func (w *written) record(key types.NamespacedName, replaced string, q *securityv1alpha1.Quarantine) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[types.NamespacedName]writtenCopy{}
	}
	now := time.Now()
	pruneStale(w.m, now, func(c writtenCopy) time.Time { return c.at })
	chain := []string{replaced}
	if prev, ok := w.m[key]; ok && prev.q.ResourceVersion == replaced && now.Sub(prev.at) <= staleFor {
		// This write followed the last one: the cache may still show any
		// version of the chain.
		chain = append(prev.replaced[max(0, len(prev.replaced)-maxChain+1):], replaced)
	}
	w.m[key] = writtenCopy{replaced: chain, q: q, at: now}
}

// latest returns the copy to start a pass from: the written one when the
// cache (cached, found) has not caught up with it, else nil (use the
// cache). A cache that shows any other version has seen the write or a
// later one, whoever made it: the written copy is dropped.
func (w *written) latest(key types.NamespacedName, cached *securityv1alpha1.Quarantine, found bool) *securityv1alpha1.Quarantine {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.m[key]
	if !ok {
		return nil
	}
	// Not found: the object exists all the same (created or written by
	// this controller, and its finalizer keeps it until a pass drops it,
	// which forgets the copy). Found at a version the writes replaced:
	// the watch has not delivered them yet.
	behind := time.Since(c.at) <= staleFor &&
		(!found || slices.Contains(c.replaced, cached.ResourceVersion))
	if !behind {
		delete(w.m, key)
		return nil
	}
	return c.q.DeepCopy()
}

// forget drops key's written copy (the object is gone).
func (w *written) forget(key types.NamespacedName) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key)
}
