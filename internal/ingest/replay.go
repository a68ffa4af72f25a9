package ingest

import (
	"cmp"
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"
)

// replayGuard remembers accepted ids for a window, bounded in count (the
// oldest are forgotten first), so a replayed id is refused.
type replayGuard struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	now    func() time.Time
	order  *list.List // of seenID, oldest at the back
	seen   map[string]*list.Element
	// restored are a predecessor's ids (by replayHash) and when they were
	// accepted; they are only looked up, and expire with the window.
	restored       map[string]time.Time
	restoredNewest time.Time
}

type seenID struct {
	key string
	at  time.Time
}

func newReplayGuard(window time.Duration, max int) *replayGuard {
	return &replayGuard{window: window, max: max, now: time.Now, order: list.New(), seen: map[string]*list.Element{}}
}

// reserve records keys unless any was seen (or repeats within keys), in
// which case nothing is recorded and the index of the first replay is
// returned. Empty keys are not tracked.
func (g *replayGuard) reserve(keys []string) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.expire(now)
	batch := make(map[string]struct{}, len(keys))
	for i, k := range keys {
		if k == "" {
			continue
		}
		if _, dup := g.seen[k]; dup {
			return i, false
		}
		if at, dup := g.restored[replayHash(k)]; dup && now.Sub(at) <= g.window {
			return i, false
		}
		if _, dup := batch[k]; dup {
			return i, false
		}
		batch[k] = struct{}{}
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		g.seen[k] = g.order.PushFront(seenID{key: k, at: now})
	}
	for g.order.Len() > g.max {
		g.drop(g.order.Back())
	}
	return 0, true
}

// release forgets keys reserved for a request that then failed.
func (g *replayGuard) release(keys []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		if el, ok := g.seen[k]; ok && k != "" {
			g.drop(el)
		}
	}
}

func (g *replayGuard) expire(now time.Time) {
	// Restored ids are checked against the window on lookup; the set is
	// dropped whole once the newest of them has expired.
	if len(g.restored) > 0 && now.Sub(g.restoredNewest) > g.window {
		g.restored = nil
	}
	for el := g.order.Back(); el != nil && now.Sub(el.Value.(seenID).at) > g.window; el = g.order.Back() {
		g.drop(el)
	}
}

func (g *replayGuard) drop(el *list.Element) {
	g.order.Remove(el)
	delete(g.seen, el.Value.(seenID).key)
}

// ReplayID is an accepted id as a successor needs it: a hash (ids are
// client-chosen and may be long) and when it was accepted.
type ReplayID struct {
	Hash string `json:"h"`
	At   int64  `json:"t"` // Unix seconds
}

// replayHash is 64 bits of the id's SHA-256: a collision refuses one
// signal as a replay with odds of 2^-64 per pair.
func replayHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// snapshot lists the ids still inside the window, newest first, at most max.
func (g *replayGuard) snapshot(max int) []ReplayID {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.expire(now)
	out := make([]ReplayID, 0, min(max, g.order.Len()+len(g.restored)))
	for el := g.order.Front(); el != nil && len(out) < max; el = el.Next() {
		id := el.Value.(seenID)
		out = append(out, ReplayID{Hash: replayHash(id.key), At: id.at.Unix()})
	}
	old := make([]ReplayID, 0, len(g.restored))
	for h, at := range g.restored {
		if now.Sub(at) <= g.window {
			old = append(old, ReplayID{Hash: h, At: at.Unix()})
		}
	}
	slices.SortFunc(old, func(a, b ReplayID) int { return cmp.Or(cmp.Compare(b.At, a.At), strings.Compare(a.Hash, b.Hash)) })
	return append(out, old[:min(len(old), max-len(out))]...)
}

// restore adds a predecessor's ids; those outside the window are dropped.
func (g *replayGuard) restore(ids []ReplayID) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if g.restored == nil {
		g.restored = map[string]time.Time{}
	}
	n := 0
	for _, id := range ids {
		at := time.Unix(id.At, 0)
		if len(id.Hash) != 16 || now.Sub(at) > g.window || len(g.restored) >= g.max {
			continue
		}
		g.restored[id.Hash] = at
		if at.After(g.restoredNewest) {
			g.restoredNewest = at
		}
		n++
	}
	return n
}
