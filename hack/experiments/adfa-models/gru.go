package main

import (
	"encoding/gob"
	"math"
	"math/rand/v2"
	"os"
	"sort"
)

// GRU language model over token ids. id 0 = unknown, id 1 = BOS, 2.. = vocab.
type GRU struct {
	V, H int
	Wx   []float32 // V x 3H  (input table incl. bias)
	U    []float32 // 3H x H
	Wo   []float32 // V x H
	Bo   []float32 // V
	// class-based output (C > 0)
	C       int
	Cls     []int     // token -> class
	Members [][]int   // class -> tokens
	Wc      []float32 // C x H
	Bc      []float32 // C
}

// SetClasses assigns tokens to C classes by frequency (Mikolov: equal shares
// of sqrt-frequency), in frequency order.
func (g *GRU) SetClasses(C int, freq []float64, rng *rand.Rand) {
	g.C = C
	g.Cls = make([]int, g.V)
	g.Members = make([][]int, C)
	g.Wc = make([]float32, C*g.H)
	g.Bc = make([]float32, C)
	for i := range g.Wc {
		g.Wc[i] = float32(rng.NormFloat64() / math.Sqrt(float64(g.H)))
	}
	idx := make([]int, g.V)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return freq[idx[a]] > freq[idx[b]] })
	var tot float64
	for _, f := range freq {
		tot += math.Sqrt(f)
	}
	var cum float64
	for _, k := range idx {
		c := min(int(cum/tot*float64(C)), C-1)
		g.Cls[k] = c
		g.Members[c] = append(g.Members[c], k)
		cum += math.Sqrt(freq[k])
	}
	for c := range g.Members {
		if len(g.Members[c]) == 0 {
			panic("empty class")
		}
	}
}

func NewGRU(V, H int, rng *rand.Rand) *GRU {
	g := &GRU{V: V, H: H, Wx: make([]float32, V*3*H), U: make([]float32, 3*H*H), Wo: make([]float32, V*H), Bo: make([]float32, V)}
	init := func(w []float32, s float64) {
		for i := range w {
			w[i] = float32(rng.NormFloat64() * s)
		}
	}
	init(g.Wx, 0.1)
	init(g.U, 1/math.Sqrt(float64(H)))
	init(g.Wo, 1/math.Sqrt(float64(H)))
	return g
}

func (g *GRU) params() [][]float32 {
	if g.C > 0 {
		return [][]float32{g.Wx, g.U, g.Wo, g.Bo, g.Wc, g.Bc}
	}
	return [][]float32{g.Wx, g.U, g.Wo, g.Bo}
}

func sigm(x float32) float32   { return sigmf(x) }
func tanh32(x float32) float32 { return tanhf(x) }

// step state buffers for training
type stepRec struct {
	x, y    int
	hprev   []float32
	z, r, n []float32
	uhn     []float32
	p       []float32
}

type trainer struct {
	g     *GRU
	grads [][]float32
	m, v  [][]float32
	t     int
	lr    float32
	recs  []stepRec
	h     []float32
	clip  float32
}

func newTrainer(g *GRU, T int, lr float32) *trainer {
	tr := &trainer{g: g, lr: lr, clip: 5}
	for _, p := range g.params() {
		tr.grads = append(tr.grads, make([]float32, len(p)))
		tr.m = append(tr.m, make([]float32, len(p)))
		tr.v = append(tr.v, make([]float32, len(p)))
	}
	H, V := g.H, g.V
	tr.recs = make([]stepRec, T)
	for i := range tr.recs {
		tr.recs[i] = stepRec{hprev: make([]float32, H), z: make([]float32, H), r: make([]float32, H), n: make([]float32, H), uhn: make([]float32, H), p: make([]float32, V+g.C)}
	}
	tr.h = make([]float32, H)
	return tr
}

// stepFull advances h by token x (recurrence only).
func (g *GRU) stepFull(x int, h []float32, z, r, n, uhn, hprev []float32, _ []float32) {
	H := g.H
	copy(hprev, h)
	a := g.Wx[x*3*H : (x+1)*3*H]
	for i := 0; i < H; i++ {
		var sz, sr, sn float32
		uz := g.U[i*H : (i+1)*H]
		ur := g.U[(H+i)*H : (H+i+1)*H]
		un := g.U[(2*H+i)*H : (2*H+i+1)*H]
		for j, hv := range hprev {
			sz += uz[j] * hv
			sr += ur[j] * hv
			sn += un[j] * hv
		}
		z[i] = sigm(a[i] + sz)
		r[i] = sigm(a[H+i] + sr)
		uhn[i] = sn
	}
	for i := 0; i < H; i++ {
		n[i] = tanh32(a[2*H+i] + r[i]*uhn[i])
		h[i] = (1-z[i])*n[i] + z[i]*hprev[i]
	}
}

func softmaxRows(W, b []float32, rows []int, H int, h []float32, p []float32) {
	mx := float32(-1e30)
	for i, k := range rows {
		w := W[k*H : (k+1)*H]
		s := b[k]
		for j, hv := range h {
			s += w[j] * hv
		}
		p[i] = s
		mx = max(mx, s)
	}
	var sum float32
	for i := range rows {
		p[i] = expf(p[i] - mx)
		sum += p[i]
	}
	for i := range rows {
		p[i] /= sum
	}
}

var allRows []int

func (g *GRU) rowsAll() []int {
	if len(allRows) != g.V {
		allRows = make([]int, g.V)
		for i := range allRows {
			allRows[i] = i
		}
	}
	return allRows
}

var classRows []int

// output computes probabilities into p and returns -log p(y).
func (g *GRU) output(h []float32, y int, p []float32) float64 {
	if g.C == 0 {
		softmaxRows(g.Wo, g.Bo, g.rowsAll(), g.H, h, p)
		return -math.Log(float64(max(p[y], 1e-30)))
	}
	if len(classRows) != g.C {
		classRows = make([]int, g.C)
		for i := range classRows {
			classRows[i] = i
		}
	}
	softmaxRows(g.Wc, g.Bc, classRows, g.H, h, p[:g.C])
	c := g.Cls[y]
	m := g.Members[c]
	pw := p[g.C:]
	softmaxRows(g.Wo, g.Bo, m, g.H, h, pw)
	var py float32
	for i, k := range m {
		if k == y {
			py = pw[i]
		}
	}
	return -math.Log(float64(max(p[c], 1e-30))) - math.Log(float64(max(py, 1e-30)))
}

// outBack accumulates output-layer gradients and adds dL/dh into dh.
func (tr *trainer) outBack(rc *stepRec, ht, dh []float32) {
	g := tr.g
	H := g.H
	back := func(W, gW, gB []float32, rows []int, p []float32, target int) {
		for i, k := range rows {
			d := p[i]
			if k == target {
				d -= 1
			}
			if d > -1e-7 && d < 1e-7 {
				continue
			}
			w := W[k*H : (k+1)*H]
			gw := gW[k*H : (k+1)*H]
			for j := 0; j < H; j++ {
				gw[j] += d * ht[j]
				dh[j] += d * w[j]
			}
			gB[k] += d
		}
	}
	if g.C == 0 {
		back(g.Wo, tr.grads[2], tr.grads[3], g.rowsAll(), rc.p, rc.y)
		return
	}
	c := g.Cls[rc.y]
	back(g.Wc, tr.grads[4], tr.grads[5], classRows, rc.p[:g.C], c)
	back(g.Wo, tr.grads[2], tr.grads[3], g.Members[c], rc.p[g.C:], rc.y)
}

// trainSeq runs truncated BPTT over ids (ids[0] = BOS), chunks of T.
func (tr *trainer) trainSeq(ids []int, T int) (loss float64, cnt int) {
	g := tr.g
	H := g.H
	for i := range tr.h {
		tr.h[i] = 0
	}
	dh := make([]float32, H)
	dhp := make([]float32, H)
	duh := make([]float32, 3*H)
	for start := 0; start+1 < len(ids); start += T {
		end := min(start+T, len(ids)-1)
		L := end - start
		for t := 0; t < L; t++ {
			rc := &tr.recs[t]
			rc.x, rc.y = ids[start+t], ids[start+t+1]
			g.stepFull(rc.x, tr.h, rc.z, rc.r, rc.n, rc.uhn, rc.hprev, nil)
			loss += g.output(tr.h, rc.y, rc.p)
			cnt++
		}
		// backward
		gWx, gU := tr.grads[0], tr.grads[1]
		for i := range dh {
			dh[i] = 0
		}
		for t := L - 1; t >= 0; t-- {
			rc := &tr.recs[t]
			// h_t: recompute from rec
			ht := dhp // temp
			for i := 0; i < H; i++ {
				ht[i] = (1-rc.z[i])*rc.n[i] + rc.z[i]*rc.hprev[i]
			}
			tr.outBack(rc, ht, dh)
			gx := gWx[rc.x*3*H : (rc.x+1)*3*H]
			for i := 0; i < H; i++ {
				dn := dh[i] * (1 - rc.z[i])
				dz := dh[i] * (rc.hprev[i] - rc.n[i])
				dan := dn * (1 - rc.n[i]*rc.n[i])
				dr := dan * rc.uhn[i]
				daz := dz * rc.z[i] * (1 - rc.z[i])
				dar := dr * rc.r[i] * (1 - rc.r[i])
				duh[i], duh[H+i], duh[2*H+i] = daz, dar, dan*rc.r[i]
				gx[i] += daz
				gx[H+i] += dar
				gx[2*H+i] += dan
			}
			for i := 0; i < H; i++ {
				dhp[i] = dh[i] * rc.z[i]
			}
			for i := 0; i < 3*H; i++ {
				d := duh[i]
				u := g.U[i*H : (i+1)*H]
				gu := gU[i*H : (i+1)*H]
				for j := 0; j < H; j++ {
					gu[j] += d * rc.hprev[j]
					dhp[j] += d * u[j]
				}
			}
			copy(dh, dhp)
		}
		tr.adam(float32(L))
	}
	return
}

func (tr *trainer) adam(scale float32) {
	tr.t++
	const b1, b2, eps = 0.9, 0.999, 1e-8
	c1 := 1 - math.Pow(b1, float64(tr.t))
	c2 := 1 - math.Pow(b2, float64(tr.t))
	lr := tr.lr * float32(math.Sqrt(c2)/c1)
	// global norm clip
	var nrm float64
	for _, gr := range tr.grads {
		for _, v := range gr {
			nrm += float64(v/scale) * float64(v/scale)
		}
	}
	nrm = math.Sqrt(nrm)
	cs := float32(1) / scale
	if nrm > float64(tr.clip) {
		cs *= tr.clip / float32(nrm)
	}
	for pi, p := range tr.g.params() {
		gr, m, v := tr.grads[pi], tr.m[pi], tr.v[pi]
		for i := range p {
			gv := gr[i] * cs
			m[i] = b1*m[i] + (1-b1)*gv
			v[i] = b2*v[i] + (1-b2)*gv*gv
			p[i] -= lr * m[i] / (float32(math.Sqrt(float64(v[i]))) + eps)
			gr[i] = 0
		}
	}
}

// NLL per step for a sequence (ids[0]=BOS).
func (g *GRU) NLL(ids []int, out []float64) []float64 {
	H := g.H
	h := make([]float32, H)
	z, r, n, uhn, hp := make([]float32, H), make([]float32, H), make([]float32, H), make([]float32, H), make([]float32, H)
	p := make([]float32, g.V+g.C)
	out = out[:0]
	for t := 0; t+1 < len(ids); t++ {
		g.stepFull(ids[t], h, z, r, n, uhn, hp, nil)
		out = append(out, g.output(h, ids[t+1], p))
	}
	return out
}

func saveGRU(g *GRU, p string) {
	f, _ := os.Create(p)
	defer f.Close()
	gob.NewEncoder(f).Encode(g)
}

func loadGRU(p string) *GRU {
	f, err := os.Open(p)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	g := &GRU{}
	if err := gob.NewDecoder(f).Decode(g); err != nil {
		panic(err)
	}
	return g
}
