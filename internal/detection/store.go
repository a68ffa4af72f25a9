package detection

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// PodKey names one pod.
type PodKey struct{ Namespace, Pod string }

// DefaultTTL is how long a score counts as fresh (--score-ttl).
const DefaultTTL = 5 * time.Minute

// Store keeps the latest score per pod and detector. It is bounded: beyond
// maxPods the least recently updated pod is dropped, and scores older than
// the TTL are neither returned nor kept by Sweep. Forget drops a deleted pod.
type Store struct {
	mu      sync.Mutex
	ttl     time.Duration
	maxPods int
	now     func() time.Time
	// lru holds *podScores, most recently updated at the front.
	lru  *list.List
	pods map[PodKey]*list.Element
}

type podScores struct {
	key   PodKey
	byDet map[string]detector.Entry
}

// NewStore returns a store keeping at most maxPods pods for ttl.
func NewStore(ttl time.Duration, maxPods int) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if maxPods <= 0 {
		maxPods = 100_000
	}
	return &Store{ttl: ttl, maxPods: maxPods, now: time.Now, lru: list.New(), pods: map[PodKey]*list.Element{}}
}

// TTL is how long a score stays fresh.
func (s *Store) TTL() time.Duration { return s.ttl }

// Put stores signals, keeping the newest per pod and detector.
func (s *Store) Put(signals []detector.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range signals {
		s.put(&signals[i])
	}
}

func (s *Store) put(sig *detector.Signal) {
	key := PodKey{sig.Namespace, sig.Pod}
	// Freshness counts from receipt at the latest: a clock ahead of ours
	// must not keep a score alive.
	now := s.now()
	t := sig.Time
	if t.IsZero() || t.After(now) {
		t = now
	}
	el, ok := s.pods[key]
	if !ok {
		el = s.lru.PushFront(&podScores{key: key, byDet: map[string]detector.Entry{}})
		s.pods[key] = el
		for s.lru.Len() > s.maxPods {
			oldest := s.lru.Back()
			s.lru.Remove(oldest)
			delete(s.pods, oldest.Value.(*podScores).key)
		}
	} else {
		s.lru.MoveToFront(el)
	}
	ps := el.Value.(*podScores)
	// An out-of-order older signal does not replace a newer score.
	if prev, ok := ps.byDet[sig.Detector]; ok && prev.Time.After(t) {
		return
	}
	if _, ok := ps.byDet[sig.Detector]; !ok && len(ps.byDet) >= MaxDetectorsPerPod {
		ps.dropOldest()
	}
	ps.byDet[sig.Detector] = detector.Entry{Score: sig.Score, Reason: boundReason(sig.Reason), Evidence: boundEvidence(sig.Evidence), Time: t}
}

// What one stored score keeps at most: the store holds up to maxPods ×
// MaxDetectorsPerPod entries, so each must be small.
const (
	MaxEvidenceBytes = 8 << 10
	MaxReasonBytes   = 1 << 10
)

// boundEvidence keeps evidence up to MaxEvidenceBytes; larger evidence is
// replaced by a note of its size (a cut JSON document would not parse).
func boundEvidence(ev json.RawMessage) json.RawMessage {
	if len(ev) <= MaxEvidenceBytes {
		return ev
	}
	return json.RawMessage(fmt.Sprintf(`{"truncated":true,"bytes":%d}`, len(ev)))
}

func boundReason(r string) string {
	if len(r) <= MaxReasonBytes {
		return r
	}
	return strings.ToValidUTF8(r[:MaxReasonBytes], "")
}

// MaxDetectorsPerPod bounds the detectors kept per pod: external names are
// chosen by clients.
const MaxDetectorsPerPod = 32

func (ps *podScores) dropOldest() {
	var oldest string
	var at time.Time
	for d, e := range ps.byDet {
		if oldest == "" || e.Time.Before(at) {
			oldest, at = d, e.Time
		}
	}
	delete(ps.byDet, oldest)
}

// Fresh returns the pod's scores younger than the TTL, by detector.
func (s *Store) Fresh(key PodKey) map[string]detector.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.pods[key]
	if !ok {
		return nil
	}
	cutoff := s.now().Add(-s.ttl)
	out := make(map[string]detector.Entry, len(el.Value.(*podScores).byDet))
	for d, e := range el.Value.(*podScores).byDet {
		if e.Time.After(cutoff) {
			out[d] = e
		}
	}
	return out
}

// Forget drops a pod's scores (the pod was deleted).
func (s *Store) Forget(key PodKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.pods[key]; ok {
		s.lru.Remove(el)
		delete(s.pods, key)
	}
}

// Len is the number of pods held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// Sweep drops expired scores and pods left with none.
func (s *Store) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := s.now().Add(-s.ttl)
	for key, el := range s.pods {
		ps := el.Value.(*podScores)
		for d, e := range ps.byDet {
			if !e.Time.After(cutoff) {
				delete(ps.byDet, d)
			}
		}
		if len(ps.byDet) == 0 {
			s.lru.Remove(el)
			delete(s.pods, key)
		}
	}
}

// Start sweeps every TTL/2 until ctx ends (a manager Runnable).
func (s *Store) Start(ctx context.Context) error {
	t := time.NewTicker(s.ttl / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Sweep()
		}
	}
}
