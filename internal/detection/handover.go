package detection

import (
	"cmp"
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Snapshot is what the leader holds in memory that a successor needs to
// carry on where it stopped: fresh scores (without evidence, which the
// evidence Secret keeps), policy streaks and the external detectors'
// names. It is what internal/handover persists.
type Snapshot struct {
	Scores    []SavedScore  `json:"scores,omitempty"`
	Streaks   []SavedStreak `json:"streaks,omitempty"`
	Detectors []string      `json:"detectors,omitempty"`
}

// SavedScore is one detector's latest score for a pod.
type SavedScore struct {
	Namespace string    `json:"ns"`
	Pod       string    `json:"pod"`
	Detector  string    `json:"det"`
	Score     float64   `json:"score"`
	Reason    string    `json:"reason,omitempty"`
	Time      time.Time `json:"t"`
}

// SavedStreak is a policy's running streak for a pod.
type SavedStreak struct {
	Namespace string    `json:"ns"`
	Pod       string    `json:"pod"`
	Policy    string    `json:"policy"`
	Streak    int       `json:"streak"`
	Since     time.Time `json:"since"`
	At        time.Time `json:"at"`
}

// Snapshot returns the fresh scores and running streaks, newest first, at
// most max of each, in a stable order (an unchanged state encodes the same).
func (e *Evaluator) Snapshot(max int) Snapshot {
	var s Snapshot
	e.Store.mu.Lock()
	cutoff := e.Store.now().Add(-e.Store.ttl)
	for el := e.Store.lru.Front(); el != nil; el = el.Next() {
		ps := el.Value.(*podScores)
		for d, en := range ps.byDet {
			if en.Time.After(cutoff) {
				s.Scores = append(s.Scores, SavedScore{Namespace: ps.key.Namespace, Pod: ps.key.Pod, Detector: d,
					Score: en.Score, Reason: en.Reason, Time: en.Time})
			}
		}
	}
	e.Store.mu.Unlock()
	e.mu.Lock()
	for key, byPolicy := range e.evals {
		for name, ev := range byPolicy {
			if ev.Streak > 0 {
				s.Streaks = append(s.Streaks, SavedStreak{Namespace: key.Namespace, Pod: key.Pod, Policy: name,
					Streak: ev.Streak, Since: ev.Since, At: ev.At})
			}
		}
	}
	e.mu.Unlock()
	slices.SortFunc(s.Scores, func(a, b SavedScore) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.Detector, b.Detector))
	})
	slices.SortFunc(s.Streaks, func(a, b SavedStreak) int {
		return cmp.Or(b.At.Compare(a.At), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.Policy, b.Policy))
	})
	s.Scores = s.Scores[:min(len(s.Scores), max)]
	s.Streaks = s.Streaks[:min(len(s.Streaks), max)]
	if e.Registry != nil {
		builtin := BuiltinDetectors(BuiltinSources())
		for _, n := range e.Registry.Names() {
			if !builtin[n] {
				s.Detectors = append(s.Detectors, n)
			}
		}
	}
	return s
}

// Restore loads a predecessor's snapshot before any signal is accepted.
// Scores older than the store's TTL are dropped; what this replica already
// holds wins over the snapshot. It returns the scores and streaks kept.
func (e *Evaluator) Restore(s Snapshot) (scores, streaks int) {
	cutoff := e.Store.now().Add(-e.Store.ttl)
	for _, sc := range s.Scores {
		if !sc.Time.After(cutoff) || sc.Namespace == "" || sc.Pod == "" || !ValidName(sc.Detector) || sc.Score < 0 || sc.Score > 1 {
			continue
		}
		key := PodKey{sc.Namespace, sc.Pod}
		if _, held := e.Store.Fresh(key)[sc.Detector]; held {
			continue
		}
		e.Store.Put([]detector.Signal{{Namespace: sc.Namespace, Pod: sc.Pod, Detector: sc.Detector, Score: sc.Score, Reason: sc.Reason, Time: sc.Time}})
		scores++
	}
	e.mu.Lock()
	for _, st := range s.Streaks {
		if st.Streak <= 0 || st.Namespace == "" || st.Pod == "" || st.Policy == "" {
			continue
		}
		key := PodKey{st.Namespace, st.Pod}
		byPolicy := e.evals[key]
		if byPolicy == nil {
			byPolicy = map[string]*policy.Evaluation{}
			e.evals[key] = byPolicy
		}
		if _, held := byPolicy[st.Policy]; held {
			continue
		}
		// Only Streak and Since carry on (see streak); the next signal
		// makes a full evaluation.
		byPolicy[st.Policy] = &policy.Evaluation{Streak: st.Streak, Since: st.Since, At: st.At}
		streaks++
	}
	e.mu.Unlock()
	if e.Registry != nil {
		for _, n := range s.Detectors {
			_ = e.Registry.Learn(n) // an invalid name or a full registry: skip it
		}
	}
	return scores, streaks
}
