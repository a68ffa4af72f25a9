// Package behavior is the built-in behavior model: per-workload baselines of
// system-call and exec sequences, exec novelty, network destinations and
// resource usage, learned during a window and then scoring new behaviour in
// [0,1] with an explanation. It needs no cluster; persistence and workload
// resolution are behind interfaces (see kubestore for the Kubernetes side).
package behavior

import "sort"

// Seq is a variable-length n-gram model of a token stream (system calls or
// exec'd binaries). Each event scores the share of its context that was never
// seen in training: 1 - L/N, where L is the longest n-gram (n <= N) ending at
// the event that the baseline holds. That is STIDE over every length at once:
// a novel call scores 1, a familiar call in an unfamiliar order scores by how
// short the familiar suffix is. Trace scores are the mean over events.
//
// The n-grams are kept in a Bloom filter of fixed size: memory is bounded
// whatever the workload does, and when a busy workload overfills it the cost
// is a higher false-"seen" rate (missed novelty), never a false alarm.
type Seq struct {
	N     int               // longest n-gram
	Vocab map[string]uint32 // token -> id (0 = unknown)
	Bits  []uint64          // Bloom filter of n-gram hashes
	Grams uint64            // n-gram insertions that set a new bit (approximate distinct count)
}

// bloomProbes is the number of bits per n-gram; 3 keeps the false-"seen"
// rate near 3% at a quarter of a bit set per probe (for 1 Mbit, ~90k n-grams).
const bloomProbes = 3

// NewSeq returns an empty model of n-grams up to n in a filter of about
// bits bits (rounded up to a power of two).
func NewSeq(n, bits int) *Seq {
	words := 1
	for words*64 < bits {
		words *= 2
	}
	return &Seq{N: n, Vocab: map[string]uint32{}, Bits: make([]uint64, words)}
}

// has reports whether hash k was inserted (or collides with what was).
func (s *Seq) has(k uint64) bool {
	mask := uint64(len(s.Bits)*64 - 1)
	h1, h2 := k, k>>32|1
	for i := uint64(0); i < bloomProbes; i++ {
		b := (h1 + i*h2) & mask
		if s.Bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func (s *Seq) insert(k uint64) {
	mask := uint64(len(s.Bits)*64 - 1)
	h1, h2 := k, k>>32|1
	fresh := false
	for i := uint64(0); i < bloomProbes; i++ {
		b := (h1 + i*h2) & mask
		if s.Bits[b/64]&(1<<(b%64)) == 0 {
			fresh = true
			s.Bits[b/64] |= 1 << (b % 64)
		}
	}
	if fresh {
		s.Grams++
	}
}

// History is the tail of one stream (one container), so runs split across
// batches still form n-grams. Zero value is an empty stream.
type History struct {
	ids []uint32
}

func mix(h uint64, id uint32) uint64 {
	h ^= uint64(id) + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
	h *= 0xff51afd7ed558ccd
	return h ^ (h >> 33)
}

func (s *Seq) id(tok string, learn bool) uint32 {
	id, ok := s.Vocab[tok]
	if !ok && learn && len(s.Vocab) < 1<<16 {
		id = uint32(len(s.Vocab) + 1)
		s.Vocab[tok] = id
	}
	return id
}

// push appends id to the history, keeping the last N ids.
func (s *Seq) push(h *History, id uint32) {
	if len(h.ids) == s.N {
		copy(h.ids, h.ids[1:])
		h.ids[len(h.ids)-1] = id
		return
	}
	h.ids = append(h.ids, id)
}

// Learn adds the n-grams of toks (continuing h) to the baseline.
func (s *Seq) Learn(h *History, toks []string) {
	for _, t := range toks {
		s.push(h, s.id(t, true))
		var k uint64
		for j := len(h.ids) - 1; j >= 0; j-- {
			k = mix(k, h.ids[j])
			s.insert(k)
		}
	}
}

// Event scores one token continuing h: 1 - L/N (see Seq). The first events of
// a stream, with less than N of history, are scored on what history exists.
func (s *Seq) Event(h *History, tok string) float64 {
	s.push(h, s.id(tok, false))
	var k uint64
	l := 0
	for j := len(h.ids) - 1; j >= 0; j-- {
		if h.ids[j] == 0 {
			break
		}
		k = mix(k, h.ids[j])
		if !s.has(k) {
			break
		}
		l++
	}
	return 1 - float64(l)/float64(len(h.ids))
}

// Score is the mean event score of toks continuing h, and the tokens whose
// events scored highest (the explanation).
func (s *Seq) Score(h *History, toks []string) (float64, []string) {
	if len(toks) == 0 {
		return 0, nil
	}
	var sum float64
	novel := map[string]float64{}
	for _, t := range toks {
		e := s.Event(h, t)
		sum += e
		if e >= 0.5 && e > novel[t] {
			novel[t] = e
		}
	}
	return sum / float64(len(toks)), top(novel, 5)
}

// top returns up to n keys of m with the highest values, ties by name.
func top(m map[string]float64, n int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}
