// Package behavior is the built-in behavior model: per-workload baselines of
// system-call and exec sequences, exec novelty, network destinations and
// resource usage, learned during a window and then scoring new behaviour in
// [0,1] with an explanation. It needs no cluster; persistence and workload
// resolution are behind interfaces (see kubestore for the Kubernetes side).
package behavior

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
)

// Seq is a variable-length n-gram model of a token stream (system calls or
// exec'd binaries). Each event scores the share of its context that was never
// seen in training: 1 - L/N, where L is the longest n-gram (n <= N) ending at
// the event that the baseline holds. That is STIDE over every length at once:
// a novel call scores 1, a familiar call in an unfamiliar order scores by how
// short the familiar suffix is. Trace scores are the mean over events.
//
// The n-grams are kept in a Bloom filter of fixed size: memory is bounded
// whatever the workload does, and when a busy workload overfills it the cost
// is a higher false-"seen" rate (missed novelty), never a false alarm. Token
// ids are hashes of the tokens, not a learned numbering, so that filters
// learned on different nodes mean the same and merge by OR; and the filter
// is a power of two in size, so halving it (OR of its halves, see fold)
// gives exactly the filter a smaller size would have learned: that is how a
// baseline shrinks to its stored size.
type Seq struct {
	N     int      // longest n-gram
	Bits  []uint64 // Bloom filter of n-gram hashes
	Grams uint64   // n-gram insertions that set a new bit (approximate distinct count)
}

// bloomProbes is the number of bits per n-gram; 3 keeps the false-"seen"
// rate near 3% at a quarter of a bit set per probe (~90k n-grams per Mbit).
const bloomProbes = 3

// NewSeq returns an empty model of n-grams up to n in a filter of about
// size bits (rounded up to a power of two).
func NewSeq(n, size int) *Seq {
	words := 1
	for words*64 < size {
		words *= 2
	}
	return &Seq{N: n, Bits: make([]uint64, words)}
}

// fold halves the filter: bit b of the result is set if b or b+half was, so
// every n-gram still tests as seen (has masks with the smaller size).
func (s *Seq) fold() {
	half := len(s.Bits) / 2
	if half == 0 {
		return
	}
	for i := 0; i < half; i++ {
		s.Bits[i] |= s.Bits[i+half]
	}
	s.Bits = s.Bits[:half:half]
}

// merge ORs o's n-grams into s, folding the larger filter to the smaller.
func (s *Seq) merge(o *Seq) error {
	if s.N != o.N {
		return fmt.Errorf("n-gram lengths differ: %d and %d", s.N, o.N)
	}
	other := Seq{Bits: slices.Clone(o.Bits)}
	for len(s.Bits) > len(other.Bits) {
		s.fold()
	}
	for len(other.Bits) > len(s.Bits) {
		other.fold()
	}
	for i := range s.Bits {
		s.Bits[i] |= other.Bits[i]
	}
	s.Grams = max(s.Grams, o.Grams, s.distinct())
	return nil
}

// distinct estimates the n-grams in the filter from the bits set
// (Swamidass and Baldi): -m/k ln(1 - X/m).
func (s *Seq) distinct() uint64 {
	m, x := float64(len(s.Bits)*64), 0.0
	for _, w := range s.Bits {
		x += float64(bits.OnesCount64(w))
	}
	if x >= m {
		return uint64(m)
	}
	return uint64(-m / bloomProbes * math.Log(1-x/m))
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

// tokenID is a token's id: a hash, the same on every node, never 0.
func tokenID(tok string) uint32 {
	v := fnv64a(tok)
	if id := uint32(v ^ v>>32); id != 0 {
		return id
	}
	return 1
}

// fnv64a is FNV-1a (hash/fnv without an allocation per token).
func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
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
		s.push(h, tokenID(t))
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
	s.push(h, tokenID(tok))
	var k uint64
	l := 0
	for j := len(h.ids) - 1; j >= 0; j-- {
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
