package sensor

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// Score changes worth sending (see SENSOR_WIRE.md).
const (
	MinScoreDelta = 0.05
	ScoreCrossing = 0.5
)

// scoreFilter passes a pod's score on only when it changed meaningfully, or
// when the last one sent is older than refresh and a newer one exists.
type scoreFilter struct {
	node    string
	refresh time.Duration
	seq     uint64
	last    map[string]sentScore // pod UID
}

type sentScore struct {
	score  float64
	reason string
	at     time.Time
	// pending is the latest score not sent because it changed too little.
	pending *detector.Signal
}

func newScoreFilter(node string, refresh time.Duration, now time.Time) *scoreFilter {
	// IDs continue across restarts: the sequence starts at the start time.
	return &scoreFilter{node: node, refresh: refresh, seq: uint64(now.UnixMicro()), last: map[string]sentScore{}}
}

// meaningful reports whether score differs enough from the last sent one.
func meaningful(prev, cur float64) bool {
	const eps = 1e-9 // 0.15-0.1 is 0.04999...
	if d := cur - prev; d >= MinScoreDelta-eps || -d >= MinScoreDelta-eps {
		return true
	}
	return (prev < ScoreCrossing) != (cur < ScoreCrossing)
}

// offer takes a new signal of the pod with uid; it returns the score to send, if any.
func (f *scoreFilter) offer(uid string, sig detector.Signal, now time.Time) (wire.Score, bool) {
	prev, ok := f.last[uid]
	// A high score for another reason is news even at the same value: a
	// second attack on a pod whose last score was already 1.0 (say right
	// after its Quarantine was released) must reach the manager now.
	key := discreteFindings(sig.Reason)
	newFinding := sig.Score >= ScoreCrossing && key != "" && key != discreteFindings(prev.reason)
	if ok && !newFinding && !meaningful(prev.score, sig.Score) && now.Sub(prev.at) < f.refresh {
		prev.pending = &sig
		f.last[uid] = prev
		return wire.Score{}, false
	}
	return f.send(uid, sig, now), true
}

// discreteFindings keeps the parts of a reason that name one new thing (a
// new binary, a new destination): the system-call share and resource
// outliers are statistics whose wording changes every batch, not news.
func discreteFindings(reason string) string {
	var keep []string
	for _, part := range strings.Split(reason, "; ") {
		if strings.HasPrefix(part, "new binary ") || strings.HasPrefix(part, "connection to new ") || strings.Contains(part, " spawned by new parent ") {
			keep = append(keep, part)
		}
	}
	return strings.Join(keep, "; ")
}

// stale returns the pending scores whose last send is older than refresh.
func (f *scoreFilter) stale(now time.Time) []wire.Score {
	var out []wire.Score
	for uid, s := range f.last {
		if s.pending != nil && now.Sub(s.at) >= f.refresh {
			out = append(out, f.send(uid, *s.pending, now))
		}
	}
	return out
}

func (f *scoreFilter) forget(uid string) { delete(f.last, uid) }

func (f *scoreFilter) send(uid string, sig detector.Signal, now time.Time) wire.Score {
	f.seq++
	f.last[uid] = sentScore{score: sig.Score, reason: sig.Reason, at: now}
	at := sig.Time
	if at.IsZero() {
		at = now
	}
	return wire.Score{
		Namespace: sig.Namespace, Pod: sig.Pod, Score: sig.Score,
		Reason:   truncate(sig.Reason, wire.MaxReason),
		Evidence: boundEvidence(sig.Evidence),
		ID:       f.node + "/" + uid + "/" + strconv.FormatUint(f.seq, 10),
		Time:     at.UTC(),
	}
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	s = s[:n-len(mark)]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + mark
}

// boundedEvidence is behavior.Evidence cut down to fit.
type boundedEvidence struct {
	behavior.Evidence
	Truncated bool `json:"truncated,omitempty"`
}

// boundEvidence keeps behavior evidence under wire.MaxEvidence bytes: the strongest
// findings first, reasons and tokens shortened; other JSON that does not
// fit is replaced by a note.
func boundEvidence(raw json.RawMessage) json.RawMessage {
	const limit = wire.MaxEvidence
	if len(raw) <= limit {
		return raw
	}
	var ev behavior.Evidence
	if err := json.Unmarshal(raw, &ev); err == nil {
		sort.SliceStable(ev.Findings, func(i, j int) bool { return ev.Findings[i].Score > ev.Findings[j].Score })
		for i := range ev.Findings {
			f := &ev.Findings[i]
			f.Reason = truncate(f.Reason, 256)
			if len(f.Tokens) > 5 {
				f.Tokens = f.Tokens[:5]
			}
			for j := range f.Tokens {
				f.Tokens[j] = truncate(f.Tokens[j], 64)
			}
		}
		ev.Workload, ev.Baseline = truncate(ev.Workload, 512), truncate(ev.Baseline, 512)
		for n := len(ev.Findings); n >= 0; n-- {
			b := boundedEvidence{Evidence: ev, Truncated: true}
			b.Findings = ev.Findings[:n]
			if out, err := json.Marshal(b); err == nil && len(out) <= limit {
				return out
			}
		}
	}
	out, _ := json.Marshal(map[string]any{"truncated": true, "bytes": len(raw)})
	return out
}
