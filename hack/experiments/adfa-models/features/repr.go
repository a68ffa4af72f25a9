package main

import (
	"math"
	"sort"
)

// bag is a sparse trace vector: feature key -> weight.
type bag map[uint64]float64

const bits = 9 // i386 numbers < 512

func ngrams(ids []int32, n int) bag {
	b := bag{}
	for i := 0; i+n <= len(ids); i++ {
		b[key(ids[i:i+n])]++
	}
	return b
}

// multi is the union of the n-gram bags for n in ns.
func multi(ids []int32, ns ...int) bag {
	b := bag{}
	for _, n := range ns {
		for k, v := range ngrams(ids, n) {
			b[k] += v
		}
	}
	return b
}

// pairs is the bag of discontiguous pairs (a, b, d): b follows a at distance d <= D.
func pairs(ids []int32, D int) bag {
	b := bag{}
	for i := range ids {
		for d := 1; d <= D && i+d < len(ids); d++ {
			b[uint64(ids[i])<<24|uint64(ids[i+d])<<8|uint64(d)]++
		}
	}
	return b
}

// transition is the row-normalised transition matrix P(b|a) flattened.
func transition(ids []int32) bag {
	b := ngrams(ids, 2)
	row := map[uint64]float64{}
	for k, v := range b {
		row[(k&^(15<<60))>>bits] += v
	}
	for k, v := range b {
		b[k] = v / row[(k&^(15<<60))>>bits]
	}
	return b
}

// weighting of a count bag.
type weighting struct {
	tf   string // "raw" (count/len), "log" (1+log c), "bin" (1), "sqrt" (sqrt of freq)
	idf  map[uint64]float64
	idf0 float64 // idf of a feature never seen in training
}

func (w weighting) apply(b bag) bag {
	var tot float64
	for _, v := range b {
		tot += v
	}
	o := make(bag, len(b))
	for k, v := range b {
		var x float64
		switch w.tf {
		case "raw":
			x = v / tot
		case "log":
			x = 1 + math.Log(v)
		case "bin":
			x = 1
		case "sqrt":
			x = math.Sqrt(v / tot)
		}
		if w.idf != nil {
			if f, ok := w.idf[k]; ok {
				x *= f
			} else {
				x *= w.idf0
			}
		}
		o[k] = x
	}
	normalize(o)
	return o
}

func normalize(b bag) {
	var s float64
	for _, v := range b {
		s += v * v
	}
	s = math.Sqrt(s)
	if s == 0 {
		return
	}
	for k := range b {
		b[k] /= s
	}
}

func docFreq(train []bag) (map[uint64]float64, float64) {
	df := map[uint64]float64{}
	for _, b := range train {
		for k := range b {
			df[k]++
		}
	}
	N := float64(len(train))
	idf := map[uint64]float64{}
	for k, d := range df {
		idf[k] = math.Log((N+1)/(d+1)) + 1
	}
	return idf, math.Log(N+1) + 1
}

type posting struct {
	i int32
	v float64
}

// knn is cosine kNN over L2-normalised bags with an inverted index.
type knn struct {
	index map[uint64][]posting
	n     int
	k     int
	sims  []float64
}

func newKNN(train []bag, k int) *knn {
	m := &knn{index: map[uint64][]posting{}, n: len(train), k: k, sims: make([]float64, len(train))}
	for i, b := range train {
		for f, v := range b {
			m.index[f] = append(m.index[f], posting{int32(i), v})
		}
	}
	return m
}

// score is 1 - mean of the k largest cosine similarities. skip excludes one
// training trace (leave-one-out for training-side statistics), -1 for none.
func (m *knn) score(b bag, skip int) float64 {
	s := m.sims
	for i := range s {
		s[i] = 0
	}
	for f, v := range b {
		for _, p := range m.index[f] {
			s[p.i] += v * p.v
		}
	}
	if skip >= 0 {
		s[skip] = -1
	}
	return 1 - topMean(s, m.k)
}

func topMean(s []float64, k int) float64 {
	if k == 1 {
		best := math.Inf(-1)
		for _, x := range s {
			if x > best {
				best = x
			}
		}
		return best
	}
	top := make([]float64, 0, k+1)
	for _, x := range s {
		if len(top) < k || x > top[len(top)-1] {
			i := sort.Search(len(top), func(i int) bool { return top[i] < x })
			top = append(top, 0)
			copy(top[i+1:], top[i:])
			top[i] = x
			if len(top) > k {
				top = top[:k]
			}
		}
	}
	var t float64
	for _, x := range top {
		t += x
	}
	return t / float64(len(top))
}

// nearest is the index and cosine similarity of the closest training bag.
func (m *knn) nearest(b bag, skip int) (int, float64) {
	s := m.sims
	for i := range s {
		s[i] = 0
	}
	for f, v := range b {
		for _, p := range m.index[f] {
			s[p.i] += v * p.v
		}
	}
	if skip >= 0 {
		s[skip] = -1
	}
	bi, bs := 0, math.Inf(-1)
	for i, x := range s {
		if x > bs {
			bi, bs = i, x
		}
	}
	return bi, bs
}
