package main

import "math"

// wbLM is a Witten-Bell n-gram LM over int ids with context up to N calls.
// Counts are keyed by hashes of (order, context) and (context, next).
type ctxStat struct{ total, distinct float32 }

type wbLM struct {
	N    int
	ctx  map[uint64]ctxStat
	pair map[uint64]float32
}

func newLM(N int) *wbLM {
	return &wbLM{N: N, ctx: map[uint64]ctxStat{}, pair: map[uint64]float32{}}
}

func mix(h, x uint64) uint64 {
	h ^= x + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
	h *= 0xff51afd7ed558ccd
	return h ^ (h >> 31)
}

// keys fills ks[k] with the hash of the length-k context ending at hist's end.
func keys(hist []int32, N int, ks []uint64) []uint64 {
	ks = ks[:0]
	h := uint64(0x1234567)
	ks = append(ks, h)
	for k := 1; k <= N && k <= len(hist); k++ {
		h = mix(h, uint64(hist[len(hist)-k])+1)
		ks = append(ks, h)
	}
	return ks
}

func (m *wbLM) addKeys(ks []uint64, y int32) {
	for _, k := range ks {
		pk := mix(k, uint64(y)+77)
		c := m.pair[pk]
		s := m.ctx[k]
		if c == 0 {
			s.distinct++
		}
		s.total++
		m.ctx[k] = s
		m.pair[pk] = c + 1
	}
}

func (m *wbLM) addTrace(ids []int32) {
	var ks []uint64
	for i := 1; i < len(ids); i++ {
		ks = keys(ids[:i], m.N, ks)
		m.addKeys(ks, ids[i])
	}
}

// prob of y given the context keys, recursion starting from base.
func (m *wbLM) prob(ks []uint64, y int32, base float64) float64 {
	p := base
	for _, k := range ks {
		s, ok := m.ctx[k]
		if !ok {
			break
		}
		c := m.pair[mix(k, uint64(y)+77)]
		p = (float64(c) + float64(s.distinct)*p) / float64(s.total+s.distinct)
	}
	return p
}

// nll returns per-call NLL of ids[1:] (ids[0] is BOS), with base probability
// from baseP (per call) or uniform 1/V if baseP is nil.
func (m *wbLM) nll(ids []int32, V int, baseP []float64, out []float64) []float64 {
	out = out[:0]
	var ks []uint64
	for i := 1; i < len(ids); i++ {
		ks = keys(ids[:i], m.N, ks)
		b := 1 / float64(V)
		if baseP != nil {
			b = baseP[i-1]
		}
		out = append(out, -math.Log(math.Max(m.prob(ks, ids[i], b), 1e-30)))
	}
	return out
}
