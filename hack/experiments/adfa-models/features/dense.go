package main

import (
	"math"
	"math/rand"
	"sort"
)

// dense maps a trace to a fixed vector over the training call vocabulary,
// with one extra dimension for calls never seen in training.
type denseMap struct {
	col map[int32]int
	dim int
	tf  string // "raw", "log", "sqrt"
}

func newDenseMap(train [][]int32, tf string) *denseMap {
	m := &denseMap{col: map[int32]int{}, tf: tf}
	for _, t := range train {
		for _, c := range t {
			if _, ok := m.col[c]; !ok {
				m.col[c] = len(m.col)
			}
		}
	}
	m.dim = len(m.col) + 1
	return m
}

func (m *denseMap) vec(ids []int32) []float64 {
	x := make([]float64, m.dim)
	for _, c := range ids {
		j, ok := m.col[c]
		if !ok {
			j = m.dim - 1
		}
		x[j]++
	}
	n := float64(len(ids))
	for j := range x {
		switch m.tf {
		case "raw":
			x[j] /= n
		case "log":
			x[j] = math.Log1p(x[j])
		case "sqrt":
			x[j] = math.Sqrt(x[j] / n)
		}
	}
	return x
}

// pca holds the eigen decomposition of the training covariance.
type pca struct {
	mean []float64
	val  []float64   // descending
	vec  [][]float64 // vec[i] is the i-th eigenvector
}

func fitPCA(X [][]float64) *pca {
	d := len(X[0])
	n := float64(len(X))
	mean := make([]float64, d)
	for _, x := range X {
		for j, v := range x {
			mean[j] += v / n
		}
	}
	C := make([][]float64, d)
	for i := range C {
		C[i] = make([]float64, d)
	}
	for _, x := range X {
		for i := 0; i < d; i++ {
			a := x[i] - mean[i]
			if a == 0 {
				continue
			}
			for j := 0; j < d; j++ {
				C[i][j] += a * (x[j] - mean[j]) / (n - 1)
			}
		}
	}
	val, vec := jacobi(C)
	return &pca{mean, val, vec}
}

// jacobi returns eigenvalues (descending) and eigenvectors of symmetric A.
func jacobi(A [][]float64) ([]float64, [][]float64) {
	d := len(A)
	a := make([][]float64, d)
	V := make([][]float64, d)
	for i := range a {
		a[i] = append([]float64(nil), A[i]...)
		V[i] = make([]float64, d)
		V[i][i] = 1
	}
	for sweep := 0; sweep < 100; sweep++ {
		var off float64
		for i := 0; i < d; i++ {
			for j := i + 1; j < d; j++ {
				off += a[i][j] * a[i][j]
			}
		}
		if off < 1e-22 {
			break
		}
		for p := 0; p < d; p++ {
			for q := p + 1; q < d; q++ {
				if math.Abs(a[p][q]) < 1e-300 {
					continue
				}
				theta := (a[q][q] - a[p][p]) / (2 * a[p][q])
				t := 1 / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				if theta < 0 {
					t = -t
				}
				c := 1 / math.Sqrt(t*t+1)
				s := t * c
				for k := 0; k < d; k++ {
					akp, akq := a[k][p], a[k][q]
					a[k][p] = c*akp - s*akq
					a[k][q] = s*akp + c*akq
				}
				for k := 0; k < d; k++ {
					apk, aqk := a[p][k], a[q][k]
					a[p][k] = c*apk - s*aqk
					a[q][k] = s*apk + c*aqk
				}
				for k := 0; k < d; k++ {
					vkp, vkq := V[k][p], V[k][q]
					V[k][p] = c*vkp - s*vkq
					V[k][q] = s*vkp + c*vkq
				}
			}
		}
	}
	idx := make([]int, d)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(x, y int) bool { return a[idx[x]][idx[x]] > a[idx[y]][idx[y]] })
	val := make([]float64, d)
	vec := make([][]float64, d)
	for r, i := range idx {
		val[r] = a[i][i]
		vec[r] = make([]float64, d)
		for k := 0; k < d; k++ {
			vec[r][k] = V[k][i]
		}
	}
	return val, vec
}

// components is the number of leading components explaining frac of variance.
func (p *pca) components(frac float64) int {
	var tot, s float64
	for _, v := range p.val {
		if v > 0 {
			tot += v
		}
	}
	for r, v := range p.val {
		s += v
		if s >= frac*tot {
			return r + 1
		}
	}
	return len(p.val)
}

// recon is the squared residual after projecting onto the first r components.
func (p *pca) recon(x []float64, r int) float64 {
	c := make([]float64, len(x))
	var tot float64
	for j := range x {
		c[j] = x[j] - p.mean[j]
		tot += c[j] * c[j]
	}
	var in float64
	for i := 0; i < r; i++ {
		var z float64
		for j, v := range p.vec[i] {
			z += v * c[j]
		}
		in += z * z
	}
	return tot - in
}

// maha is the Mahalanobis distance with ridge shrinkage lambda*mean eigenvalue.
func (p *pca) maha(x []float64, ridge float64) float64 {
	var mv float64
	for _, v := range p.val {
		mv += math.Max(v, 0) / float64(len(p.val))
	}
	var s float64
	for i := range p.vec {
		var z float64
		for j, v := range p.vec[i] {
			z += v * (x[j] - p.mean[j])
		}
		s += z * z / (math.Max(p.val[i], 0) + ridge*mv)
	}
	return s
}

// Isolation Forest (Liu, Ting, Zhou 2008).
type itree struct {
	feat        int
	split       float64
	left, right *itree
	size        int
}

func cn(n int) float64 {
	if n <= 1 {
		return 0
	}
	return 2*(math.Log(float64(n-1))+0.5772156649) - 2*float64(n-1)/float64(n)
}

func buildITree(X [][]float64, depth, maxDepth int, rng *rand.Rand) *itree {
	if depth >= maxDepth || len(X) <= 1 {
		return &itree{size: len(X), feat: -1}
	}
	d := len(X[0])
	// pick a feature that varies in this node
	for try := 0; try < 20; try++ {
		f := rng.Intn(d)
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range X {
			lo = math.Min(lo, x[f])
			hi = math.Max(hi, x[f])
		}
		if hi <= lo {
			continue
		}
		sp := lo + rng.Float64()*(hi-lo)
		var L, R [][]float64
		for _, x := range X {
			if x[f] < sp {
				L = append(L, x)
			} else {
				R = append(R, x)
			}
		}
		return &itree{feat: f, split: sp, left: buildITree(L, depth+1, maxDepth, rng), right: buildITree(R, depth+1, maxDepth, rng)}
	}
	return &itree{size: len(X), feat: -1}
}

func (t *itree) path(x []float64, depth int) float64 {
	if t.feat < 0 {
		return float64(depth) + cn(t.size)
	}
	if x[t.feat] < t.split {
		return t.left.path(x, depth+1)
	}
	return t.right.path(x, depth+1)
}

type iforest struct {
	trees []*itree
	psi   int
}

func fitIForest(X [][]float64, ntrees, psi int, seed int64) *iforest {
	rng := rand.New(rand.NewSource(seed))
	if psi > len(X) {
		psi = len(X)
	}
	f := &iforest{psi: psi}
	maxDepth := int(math.Ceil(math.Log2(float64(psi))))
	for t := 0; t < ntrees; t++ {
		perm := rng.Perm(len(X))[:psi]
		sub := make([][]float64, psi)
		for i, j := range perm {
			sub[i] = X[j]
		}
		f.trees = append(f.trees, buildITree(sub, 0, maxDepth, rng))
	}
	return f
}

func (f *iforest) score(x []float64) float64 {
	var h float64
	for _, t := range f.trees {
		h += t.path(x, 0)
	}
	h /= float64(len(f.trees))
	return math.Pow(2, -h/cn(f.psi))
}
