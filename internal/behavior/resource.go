package behavior

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Resource features, log1p-scaled because usage is heavy-tailed.
var resourceNames = [nFeat]string{"cpu", "memory", "net-rx", "net-tx", "disk-read", "disk-write"}

const nFeat = 6

// minHSTSamples is the reference size below which only median/MAD scores.
const minHSTSamples = 128

func features(r *detector.ResourceSample) [nFeat]float64 {
	v := [nFeat]float64{r.CPUMillicores, r.MemoryBytes, r.NetworkRxBytes, r.NetworkTxBytes, r.DiskReadBytes, r.DiskWrittenBytes}
	for i := range v {
		v[i] = math.Log1p(math.Max(0, v[i]))
	}
	return v
}

// Resource models resource samples: per feature, how far a sample falls
// outside the learned range in units of the median absolute deviation (idle
// services are bursty, so distance from the median alone flags every normal
// burst); and Half-Space Trees for joint outliers. Learning keeps a bounded
// reservoir; both are fitted from it when scoring starts.
type Resource struct {
	Cap     int
	Seen    uint64
	Samples [][nFeat]float64
	Median  [nFeat]float64
	MAD     [nFeat]float64
	Lo, Hi  [nFeat]float64 // learned range
	trees   *HST           // fitted from Samples when scoring starts; not persisted
}

// NewResource returns an empty model keeping at most cap samples.
func NewResource(cap int) *Resource { return &Resource{Cap: cap} }

// Learn adds a sample (reservoir sampling keeps memory bounded).
func (m *Resource) Learn(r *detector.ResourceSample, rng *rand.Rand) {
	m.Seen++
	v := features(r)
	if len(m.Samples) < m.Cap {
		m.Samples = append(m.Samples, v)
	} else if i := rng.Uint64N(m.Seen); i < uint64(m.Cap) {
		m.Samples[i] = v
	}
	m.trees = nil
}

// fit computes the statistics; needs a few samples.
func (m *Resource) fit(rng *rand.Rand) bool {
	if m.trees != nil {
		return true
	}
	if len(m.Samples) < 8 {
		return false
	}
	col := make([]float64, len(m.Samples))
	for f := 0; f < nFeat; f++ {
		for i, s := range m.Samples {
			col[i] = s[f]
		}
		m.Median[f] = median(col)
		m.Lo[f], m.Hi[f] = slices.Min(col), slices.Max(col)
		for i, s := range m.Samples {
			col[i] = math.Abs(s[f] - m.Median[f])
		}
		m.MAD[f] = median(col)
	}
	m.trees = NewHST(m.Samples, 16, 6, rng)
	return true
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Score is the larger of the range score (0 within the learned range, then
// rising to 1 from one MAD beyond it) and the Half-Space-Trees score; with
// the feature that stood out.
func (m *Resource) Score(r *detector.ResourceSample, rng *rand.Rand) (float64, string) {
	if !m.fit(rng) {
		return 0, ""
	}
	v := features(r)
	best, which := 0.0, ""
	for f := 0; f < nFeat; f++ {
		// Floor of 0.5 in log space: a near-constant feature must move by
		// about 4.5x (3 floors) before it counts, not by any small change.
		out := math.Max(v[f]-m.Hi[f], m.Lo[f]-v[f])
		z := out / math.Max(1.4826*m.MAD[f], 0.5)
		if s := 1 - math.Exp(-math.Max(0, z-1)/2); s > best {
			best, which = s, fmt.Sprintf("%s %.1f MADs outside its learned range", resourceNames[f], z)
		}
	}
	// Half-space trees need enough reference mass to tell empty from rare.
	if h := m.trees.Score(v); len(m.Samples) >= minHSTSamples && h > best {
		best, which = h, "unusual combination of resource usage (half-space trees)"
	}
	return best, which
}

// HST is a Half-Space-Trees ensemble (Tan, Ting, Liu 2011): random
// axis-aligned splits of the feature box; a point landing in regions that
// held little reference mass is anomalous.
type HST struct {
	Depth int
	Nodes [][]hstNode // per tree, heap-ordered (children of i: 2i+1, 2i+2)
	// Typical is the median mass score of the reference samples.
	Typical float64
}

type hstNode struct {
	Dim   int
	Split float64
	Mass  float64
}

// NewHST builds trees over the box spanned by ref (with margins) and loads
// the reference mass.
func NewHST(ref [][nFeat]float64, trees, depth int, rng *rand.Rand) *HST {
	var lo, hi [nFeat]float64
	for f := range lo {
		lo[f], hi[f] = math.Inf(1), math.Inf(-1)
		for _, s := range ref {
			lo[f], hi[f] = math.Min(lo[f], s[f]), math.Max(hi[f], s[f])
		}
		// Work range as in the paper: a random box around the data.
		w := math.Max(hi[f]-lo[f], 0.1)
		lo[f] -= w * (0.5 + rng.Float64())
		hi[f] += w * (0.5 + rng.Float64())
	}
	h := &HST{Depth: depth, Nodes: make([][]hstNode, trees)}
	for t := range h.Nodes {
		nodes := make([]hstNode, 1<<(depth+1)-1)
		var build func(i int, lo, hi [nFeat]float64)
		build = func(i int, lo, hi [nFeat]float64) {
			if i >= len(nodes) {
				return
			}
			d := rng.IntN(nFeat)
			nodes[i] = hstNode{Dim: d, Split: (lo[d] + hi[d]) / 2}
			l, r := hi, lo
			l[d], r[d] = nodes[i].Split, nodes[i].Split
			build(2*i+1, lo, l)
			build(2*i+2, r, hi)
		}
		build(0, lo, hi)
		h.Nodes[t] = nodes
	}
	for _, s := range ref {
		h.walk(s, func(n *hstNode, _ int) { n.Mass++ })
	}
	sc := make([]float64, len(ref))
	for i, s := range ref {
		sc[i] = h.mass(s)
	}
	h.Typical = median(sc)
	return h
}

func (h *HST) walk(v [nFeat]float64, fn func(n *hstNode, depth int)) {
	for _, nodes := range h.Nodes {
		i := 0
		for d := 0; i < len(nodes); d++ {
			fn(&nodes[i], d)
			if v[nodes[i].Dim] < nodes[i].Split {
				i = 2*i + 1
			} else {
				i = 2*i + 2
			}
		}
	}
}

// mass is the paper's score: sum over trees of mass * 2^depth at the deepest
// node on the path that still holds reference mass.
func (h *HST) mass(v [nFeat]float64) float64 {
	var total float64
	for _, nodes := range h.Nodes {
		i, last := 0, 0.0
		for d := 0; i < len(nodes) && nodes[i].Mass > 0; d++ {
			last = nodes[i].Mass * math.Pow(2, float64(d))
			if v[nodes[i].Dim] < nodes[i].Split {
				i = 2*i + 1
			} else {
				i = 2*i + 2
			}
		}
		total += last
	}
	return total
}

// Score in [0,1]: 0 down to a quarter of the typical mass, then rising by
// 0.125 per halving, so only regions far emptier than usual score high.
func (h *HST) Score(v [nFeat]float64) float64 {
	m := h.mass(v)
	if h.Typical == 0 || m >= h.Typical {
		return 0
	}
	if m == 0 {
		return 1
	}
	return math.Min(1, math.Max(0, math.Log2(h.Typical/m)-2)/8)
}

// merge combines o's reservoir into m's: up to Cap samples, drawn from each
// side in proportion to the samples it saw, always keeping each side's
// per-feature extremes so the learned range is the union of both.
func (m *Resource) merge(o *Resource) {
	m.trees = nil
	all := append(slices.Clone(m.Samples), o.Samples...)
	seen := m.Seen + o.Seen
	capacity := max(m.Cap, o.Cap)
	m.Cap = capacity
	if len(all) <= capacity {
		m.Samples, m.Seen = all, seen
		return
	}
	// Deterministic: the same two baselines merge the same way on any node.
	rng := rand.New(rand.NewPCG(m.Seen, o.Seen))
	keep := map[int]bool{}
	for _, side := range [][2]int{{0, len(m.Samples)}, {len(m.Samples), len(all)}} {
		for f := 0; f < nFeat && side[1] > side[0]; f++ {
			lo, hi := side[0], side[0]
			for i := side[0]; i < side[1]; i++ {
				if all[i][f] < all[lo][f] {
					lo = i
				}
				if all[i][f] > all[hi][f] {
					hi = i
				}
			}
			keep[lo], keep[hi] = true, true
		}
	}
	// Weight each sample by how many observations it stands for.
	weight := func(i int) float64 {
		if i < len(m.Samples) {
			return float64(max(m.Seen, 1)) / float64(len(m.Samples))
		}
		return float64(max(o.Seen, 1)) / float64(len(o.Samples))
	}
	// Weighted sampling without replacement (Efraimidis-Spirakis keys).
	type keyed struct {
		i int
		k float64
	}
	var cand []keyed
	for i := range all {
		if !keep[i] {
			cand = append(cand, keyed{i, math.Pow(rng.Float64(), 1/weight(i))})
		}
	}
	sort.Slice(cand, func(a, b int) bool { return cand[a].k > cand[b].k })
	out := make([][nFeat]float64, 0, capacity)
	for i := range all {
		if keep[i] {
			out = append(out, all[i])
		}
	}
	for _, c := range cand {
		if len(out) >= capacity {
			break
		}
		out = append(out, all[c.i])
	}
	m.Samples, m.Seen = out, seen
}
