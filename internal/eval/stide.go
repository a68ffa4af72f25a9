package eval

// stideN is the window length of the STIDE reference: the 6-call windows of
// Forrest et al., the setting the published ADFA-LD STIDE figures use.
const stideN = 6

// stide is the reference the built-in model has to beat, trained on the same
// traces: the set of every stideN-call window seen in training, and a trace
// scored by the share of its windows never seen (Forrest et al. 1996,
// Warrender et al. 1999). It lives here, not in internal/behavior, because the
// manager never runs it.
type stide struct {
	vocab map[string]uint64
	seen  map[uint64]struct{}
}

func trainSTIDE(train []Trace) *stide {
	s := &stide{vocab: map[string]uint64{}, seen: map[uint64]struct{}{}}
	for _, t := range train {
		s.windows(t.Syscalls, true, func(k uint64) { s.seen[k] = struct{}{} })
	}
	return s
}

// windows calls fn with the key of each stideN-call window of calls (the
// whole trace when it is shorter; none when it is empty). Calls never seen in training get id 0.
func (s *stide) windows(calls []string, learn bool, fn func(uint64)) {
	ids := make([]uint64, len(calls))
	for i, c := range calls {
		id, ok := s.vocab[c]
		if !ok && learn {
			id = uint64(len(s.vocab) + 1)
			s.vocab[c] = id
		}
		ids[i] = id
	}
	n := min(stideN, len(ids))
	if n == 0 {
		return
	}
	for i := 0; i+n <= len(ids); i++ {
		var k uint64 = 14695981039346656037 // FNV-1a over the window's ids
		for _, id := range ids[i : i+n] {
			k = (k ^ id) * 1099511628211
		}
		fn(k)
	}
}

// score is the share of the trace's windows never seen in training.
func (s *stide) score(t Trace) float64 {
	var all, unseen int
	s.windows(t.Syscalls, false, func(k uint64) {
		all++
		if _, ok := s.seen[k]; !ok {
			unseen++
		}
	})
	if all == 0 {
		return 0
	}
	return float64(unseen) / float64(all)
}
