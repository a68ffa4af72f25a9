package behavior

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// ErrUnknownPod is returned (wrapped) by a Resolver for a pod that does not
// exist (any more); its events are dropped rather than failing the batch.
var ErrUnknownPod = errors.New("unknown pod")

// Resolver finds the workload of a pod: its controlling owner and template
// hash (Kubernetes lookups live outside this package).
type Resolver interface {
	Resolve(ctx context.Context, namespace, pod string) (Key, error)
}

// Store persists baselines where tenants cannot write.
type Store interface {
	// Load returns every stored baseline of the workload (any template hash).
	Load(ctx context.Context, namespace, owner string) ([]*Baseline, error)
	Save(ctx context.Context, b *Baseline) error
}

// Observer is the behavior detector: it learns per-workload baselines and
// scores pods against them. Safe for concurrent use.
type Observer struct {
	cfg      Config
	resolver Resolver
	store    Store // may be nil: baselines then live in memory only
	now      func() time.Time

	mu        sync.Mutex
	rng       *rand.Rand
	workloads map[string]*workload // namespace/owner
	streams   map[string]*podStreams
	// idle is how long a workload or stream may go without events before a
	// flush drops it from memory (its baselines stay in the store and are
	// loaded again on its next event); only with a store.
	idle time.Duration
}

type workload struct {
	cur, prev *Baseline
	// dirty baselines changed since the last flush (cur, or a cur that a
	// rollout just made prev).
	dirty    map[*Baseline]bool
	lastSeen time.Time
}

// podStreams is the sequence state of one container against the learning and
// the scoring baseline (their vocabularies differ).
type podStreams struct {
	learn, score Stream
	baseline     *Baseline // the scoring baseline the state belongs to
	lastSeen     time.Time
}

// maxStreams bounds per-container state; beyond it the map is reset, which
// only costs the n-gram context of live streams.
const maxStreams = 1 << 16

// defaultIdle is how long an idle workload stays in memory: long enough that
// a quiet workload is not reloaded on every event, short enough that deleted
// workloads do not accumulate.
const defaultIdle = time.Hour

// NewObserver returns a behavior detector. store may be nil.
func NewObserver(cfg Config, r Resolver, store Store) *Observer {
	return &Observer{
		cfg: cfg.withDefaults(), resolver: r, store: store, now: time.Now,
		rng:       rand.New(rand.NewPCG(1, 2)),
		workloads: map[string]*workload{}, streams: map[string]*podStreams{},
		idle: defaultIdle,
	}
}

// Evidence is the JSON evidence attached to a behavior signal.
type Evidence struct {
	Workload string    `json:"workload"`
	Baseline string    `json:"baseline"` // key of the baseline scored against
	Learning bool      `json:"learning"` // the pod's own revision is still learning
	Findings []Finding `json:"findings"`
}

// ObserveBehavior learns from and scores events, one signal per pod that has
// a baseline to be scored against (none while a first revision learns); it
// is the detection pipeline's Model.
func (o *Observer) ObserveBehavior(ctx context.Context, events []detector.BehaviorEvent) ([]detector.Signal, error) {
	type podRef struct{ ns, pod string }
	byPod := map[podRef][]detector.BehaviorEvent{}
	var order []podRef
	for _, ev := range events {
		p := podRef{ev.Namespace, ev.Pod}
		if _, ok := byPod[p]; !ok {
			order = append(order, p)
		}
		byPod[p] = append(byPod[p], ev)
	}
	var out []detector.Signal
	for _, p := range order {
		key, err := o.resolver.Resolve(ctx, p.ns, p.pod)
		if errors.Is(err, ErrUnknownPod) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("resolving workload of %s/%s: %w", p.ns, p.pod, err)
		}
		// The detection pipeline records bulkhead_detector_latency_seconds around this call.
		sig, err := o.observePod(ctx, key, p.pod, byPod[p])
		if err != nil {
			return out, err
		}
		if sig != nil {
			out = append(out, *sig)
		}
	}
	return out, nil
}

func (o *Observer) workload(ctx context.Context, key Key) (*workload, error) {
	id := key.Namespace + "/" + key.Owner
	w, ok := o.workloads[id]
	if !ok {
		w = &workload{dirty: map[*Baseline]bool{}}
		if o.store != nil {
			stored, err := o.store.Load(ctx, key.Namespace, key.Owner)
			if err != nil {
				return nil, fmt.Errorf("loading baselines of %s: %w", id, err)
			}
			// Newest first: the current revision's baseline, else the latest one.
			sort.Slice(stored, func(i, j int) bool { return stored[i].Started.After(stored[j].Started) })
			for _, b := range stored {
				switch {
				case b.Key.TemplateHash == key.TemplateHash && w.cur == nil:
					w.cur = b
				case b.Key.TemplateHash != key.TemplateHash && w.prev == nil && !b.Learning(o.now()):
					w.prev = b
				}
			}
		}
		o.workloads[id] = w
	}
	if w.cur == nil || w.cur.Key.TemplateHash != key.TemplateHash {
		// A rollout: learn anew, scored meanwhile against the last finished baseline.
		if w.cur != nil && !w.cur.Learning(o.now()) {
			w.prev = w.cur
		}
		w.cur = NewBaseline(key, o.cfg, o.now())
		w.dirty = map[*Baseline]bool{w.cur: true, w.prev: w.dirty[w.prev]}
	}
	return w, nil
}

func (o *Observer) observePod(ctx context.Context, key Key, pod string, evs []detector.BehaviorEvent) (*detector.Signal, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, err := o.workload(ctx, key)
	if err != nil {
		return nil, err
	}
	now := o.now()
	w.lastSeen = now
	learning := w.cur.Learning(now)
	scoring := w.cur
	if learning {
		scoring = w.prev
	}
	streams := func(c string) *podStreams {
		id := key.Namespace + "/" + pod + "/" + c
		s, ok := o.streams[id]
		if !ok {
			if len(o.streams) >= maxStreams {
				o.streams = map[string]*podStreams{}
			}
			s = &podStreams{}
			o.streams[id] = s
		}
		if s.baseline != scoring {
			s.score, s.baseline = Stream{}, scoring
		}
		s.lastSeen = now
		return s
	}
	if learning {
		for i := range evs {
			w.cur.Learn(&evs[i], &streams(evs[i].Container).learn, o.rng)
		}
		w.dirty[w.cur] = true
	}
	if scoring == nil {
		return nil, nil
	}
	findings := scoring.Score(evs, func(c string) *Stream { return &streams(c).score }, o.rng)
	if len(findings) == 0 {
		return nil, nil
	}
	best := findings[0]
	for _, f := range findings[1:] {
		if f.Score > best.Score {
			best = f
		}
	}
	ev, err := json.Marshal(Evidence{Workload: key.String(), Baseline: scoring.Key.String(), Learning: learning, Findings: findings})
	if err != nil {
		return nil, err
	}
	reason := best.Reason
	if len(best.Tokens) > 0 {
		reason += fmt.Sprintf(" (e.g. %v)", best.Tokens)
	}
	// Name every notable behaviour, not only the worst: a download and exec
	// is a new binary and a new destination.
	also := 0
	for _, f := range findings {
		if f.Component == best.Component || f.Reason == "" || f.Score < notable || also == maxAlso {
			continue
		}
		reason += "; " + f.Reason
		also++
	}
	return &detector.Signal{
		Namespace: key.Namespace, Pod: pod, Detector: detector.Behavior,
		Score: best.Score, Reason: reason, Evidence: ev, Time: evs[len(evs)-1].Time,
	}, nil
}

// evictIdle drops idle workloads that have nothing left to save, and idle
// streams. Called with o.mu held.
func (o *Observer) evictIdle() {
	cutoff := o.now().Add(-o.idle)
	for id, w := range o.workloads {
		clean := true
		for b, dirty := range w.dirty {
			if dirty && b != nil {
				clean = false
			}
		}
		if clean && w.lastSeen.Before(cutoff) {
			delete(o.workloads, id)
		}
	}
	for id, s := range o.streams {
		if s.lastSeen.Before(cutoff) {
			delete(o.streams, id)
		}
	}
}

// notable is the finding score named in a signal's reason beside the worst
// one; maxAlso bounds how many.
const (
	notable = 0.5
	maxAlso = 3
)

// Flush saves every baseline changed since the last flush and drops from
// memory the workloads and streams idle for longer than o.idle whose
// baselines are already stored.
func (o *Observer) Flush(ctx context.Context) error {
	if o.store == nil {
		return nil
	}
	o.mu.Lock()
	o.evictIdle()
	var todo []*Baseline
	for _, w := range o.workloads {
		for b, dirty := range w.dirty {
			if !dirty || b == nil {
				continue
			}
			data, err := b.MarshalBinary() // snapshot under the lock
			if err != nil {
				o.mu.Unlock()
				return err
			}
			c := &Baseline{}
			if err := c.UnmarshalBinary(data); err != nil {
				o.mu.Unlock()
				return err
			}
			todo = append(todo, c)
		}
		clear(w.dirty)
	}
	o.mu.Unlock()
	for _, b := range todo {
		if err := o.store.Save(ctx, b); err != nil {
			return fmt.Errorf("saving baseline %s: %w", b.Key, err)
		}
	}
	return nil
}
