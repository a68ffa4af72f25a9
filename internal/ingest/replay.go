package ingest

import (
	"container/list"
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
	for el := g.order.Back(); el != nil && now.Sub(el.Value.(seenID).at) > g.window; el = g.order.Back() {
		g.drop(el)
	}
}

func (g *replayGuard) drop(el *list.Element) {
	g.order.Remove(el)
	delete(g.seen, el.Value.(seenID).key)
}
