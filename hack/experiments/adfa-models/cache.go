package main

import "math"

// wbCounts: n-gram counts with Witten-Bell back-off.
type ctxStat struct {
	total, distinct float64
	next            map[int]float64
}

type wb struct {
	K   int
	tab map[uint64]*ctxStat
}

func newWB(K int) *wb { return &wb{K: K, tab: map[uint64]*ctxStat{}} }

func ctxKey(hist []int, k int) uint64 {
	h := uint64(k) * 0x9e3779b97f4a7c15
	for i := len(hist) - k; i < len(hist); i++ {
		h ^= uint64(hist[i]) + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
		h *= 0xff51afd7ed558ccd
	}
	return h ^ (h >> 33)
}

// prob of y after hist with base probability base for order -1.
func (w *wb) prob(hist []int, y int, base float64) float64 {
	p := base
	for k := 0; k <= w.K && k <= len(hist); k++ {
		s := w.tab[ctxKey(hist, k)]
		if s == nil {
			break
		}
		p = (s.next[y] + s.distinct*p) / (s.total + s.distinct)
	}
	return p
}

func (w *wb) add(hist []int, y int) {
	for k := 0; k <= w.K && k <= len(hist); k++ {
		key := ctxKey(hist, k)
		s := w.tab[key]
		if s == nil {
			s = &ctxStat{next: map[int]float64{}}
			w.tab[key] = s
		}
		if s.next[y] == 0 {
			s.distinct++
		}
		s.next[y]++
		s.total++
	}
}

// cacheNLL: per-event NLL of ids[1:] where base p comes from lmNLL (per event)
// and a per-trace WB cache of order K backs off to it.
func cacheNLL(ids []int, lmNLL []float64, K int, out []float64) []float64 {
	c := newWB(K)
	out = out[:0]
	for t := 0; t+1 < len(ids); t++ {
		hist := ids[:t+1]
		if len(hist) > K {
			hist = hist[len(hist)-K:]
		}
		y := ids[t+1]
		p := c.prob(hist, y, math.Exp(-lmNLL[t]))
		out = append(out, -math.Log(math.Max(p, 1e-30)))
		c.add(hist, y)
	}
	return out
}

// dist fills p with the WB distribution after hist (base uniform).
func (w *wb) dist(hist []int, p []float64) {
	V := len(p)
	for i := range p {
		p[i] = 1 / float64(V)
	}
	for k := 0; k <= w.K && k <= len(hist); k++ {
		s := w.tab[ctxKey(hist, k)]
		if s == nil {
			break
		}
		d := s.total + s.distinct
		for i := range p {
			p[i] = s.distinct * p[i] / d
		}
		for y, c := range s.next {
			p[y] += c / d
		}
	}
}

// excess returns per-event surprisal minus entropy, and log-rank.
func excess(p []float64, y int) (float64, float64) {
	var h float64
	rank := 1
	for i, q := range p {
		if q > 0 {
			h -= q * math.Log(q)
		}
		if i != y && q > p[y] {
			rank++
		}
	}
	return -math.Log(math.Max(p[y], 1e-30)) - h, math.Log(float64(rank))
}
