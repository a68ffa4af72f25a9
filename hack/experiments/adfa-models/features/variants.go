package main

import (
	"fmt"
	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"math"
)

func bagKNN(name string, feat func([]int32) bag, tf string, useIDF bool, k int) variant {
	return variant{name, func(train [][]int32) scorer {
		raw := make([]bag, len(train))
		for i, t := range train {
			raw[i] = feat(t)
		}
		w := weighting{tf: tf}
		if useIDF {
			w.idf, w.idf0 = docFreq(raw)
		}
		vec := make([]bag, len(train))
		for i, b := range raw {
			vec[i] = w.apply(b)
		}
		m := newKNN(vec, k)
		return func(ids []int32) float64 { return m.score(w.apply(feat(ids)), -1) }
	}}
}

// bagLOF is 1-NN distance divided by that neighbour's own leave-one-out 1-NN
// distance in training (a local-density correction, LOF-like).
func bagLOF(name string, feat func([]int32) bag, tf string, useIDF bool, eps float64) variant {
	return variant{name, func(train [][]int32) scorer {
		raw := make([]bag, len(train))
		for i, t := range train {
			raw[i] = feat(t)
		}
		w := weighting{tf: tf}
		if useIDF {
			w.idf, w.idf0 = docFreq(raw)
		}
		vec := make([]bag, len(train))
		for i, b := range raw {
			vec[i] = w.apply(b)
		}
		m := newKNN(vec, 1)
		r := make([]float64, len(train))
		for i, b := range vec {
			_, s := m.nearest(b, i)
			r[i] = 1 - s
		}
		return func(ids []int32) float64 {
			j, s := m.nearest(w.apply(feat(ids)), -1)
			return (1 - s) / (r[j] + eps)
		}
	}}
}

func variants(cls map[int32]int32) []variant {
	vs := []variant{
		{"cover", func(train [][]int32) scorer {
			a := exp.BuildSAM(train)
			return a.CoverSegs
		}},
	}
	uni := func(ids []int32) bag { return ngrams(ids, 1) }
	bi := func(ids []int32) bag { return ngrams(ids, 2) }
	tri := func(ids []int32) bag { return ngrams(ids, 3) }
	m13 := func(ids []int32) bag { return multi(ids, 1, 2, 3) }
	m25 := func(ids []int32) bag { return multi(ids, 2, 3, 4, 5) }
	// (1) trace-level bags, cosine kNN
	for _, k := range []int{1, 5} {
		for _, tf := range []string{"raw", "log", "bin"} {
			for _, idf := range []bool{false, true} {
				suf := fmt.Sprintf("%s%s k%d", tf, map[bool]string{true: "-idf"}[idf], k)
				vs = append(vs,
					bagKNN("knn uni "+suf, uni, tf, idf, k),
					bagKNN("knn bi "+suf, bi, tf, idf, k),
					bagKNN("knn tri "+suf, tri, tf, idf, k),
					bagKNN("knn 1-3 "+suf, m13, tf, idf, k),
					bagKNN("knn 2-5 "+suf, m25, tf, idf, k),
				)
			}
		}
	}
	for _, D := range []int{3, 6, 10} {
		D := D
		f := func(ids []int32) bag { return pairs(ids, D) }
		vs = append(vs,
			bagKNN(fmt.Sprintf("knn pairs%d log-idf k1", D), f, "log", true, 1),
			bagKNN(fmt.Sprintf("knn pairs%d bin-idf k1", D), f, "bin", true, 1),
			bagKNN(fmt.Sprintf("knn pairs%d log-idf k5", D), f, "log", true, 5),
		)
	}
	vs = append(vs, bagKNN("knn uni bin k2", uni, "bin", false, 2), bagKNN("knn uni bin k3", uni, "bin", false, 3), bagKNN("knn uni bin k10", uni, "bin", false, 10))
	for _, eps := range []float64{0.01, 0.05} {
		vs = append(vs,
			bagLOF(fmt.Sprintf("lof uni bin eps%.2f", eps), uni, "bin", false, eps),
			bagLOF(fmt.Sprintf("lof tri raw-idf eps%.2f", eps), tri, "raw", true, eps),
			bagLOF(fmt.Sprintf("lof uni log eps%.2f", eps), uni, "log", false, eps))
	}
	// order-free set novelty: call pairs never used together in one training
	// trace, and containment of the call set in the best training call set.
	callSet := func(ids []int32) []int32 {
		seen := map[int32]bool{}
		var o []int32
		for _, c := range ids {
			if !seen[c] {
				seen[c] = true
				o = append(o, c)
			}
		}
		return o
	}
	vs = append(vs, variant{"cooc unseen pairs", func(train [][]int32) scorer {
		co := map[uint64]bool{}
		for _, t := range train {
			cs := callSet(t)
			for _, a := range cs {
				for _, b := range cs {
					co[uint64(a)<<16|uint64(b)] = true
				}
			}
		}
		return func(ids []int32) float64 {
			cs := callSet(ids)
			var u, tot float64
			for _, a := range cs {
				for _, b := range cs {
					if a < b {
						tot++
						if !co[uint64(a)<<16|uint64(b)] {
							u++
						}
					}
				}
			}
			return u / math.Max(tot, 1)
		}
	}})
	vs = append(vs, variant{"contain set k1", func(train [][]int32) scorer {
		sets := make([]map[int32]bool, len(train))
		for i, t := range train {
			sets[i] = map[int32]bool{}
			for _, c := range t {
				sets[i][c] = true
			}
		}
		return func(ids []int32) float64 {
			cs := callSet(ids)
			best := math.Inf(1)
			for _, s := range sets {
				miss := 0
				for _, c := range cs {
					if !s[c] {
						miss++
					}
				}
				// ties broken by how much larger the training set is
				v := float64(miss)/float64(len(cs)) + 1e-3*float64(len(s)-len(cs)+miss)/float64(len(s)+len(cs))
				if v < best {
					best = v
				}
			}
			return best
		}
	}})
	vs = append(vs, bagKNN("knn trans raw k1", transition, "bin", false, 1))
	vs = append(vs, bagKNN("knn trans raw k1 sq", func(ids []int32) bag {
		b := transition(ids)
		for k := range b {
			b[k] = math.Sqrt(b[k])
		}
		return b
	}, "raw", false, 1))
	// dense: PCA residual, Mahalanobis, Isolation Forest
	for _, tf := range []string{"raw", "log", "sqrt"} {
		tf := tf
		for _, frac := range []float64{0.8, 0.9, 0.95} {
			frac := frac
			vs = append(vs, variant{fmt.Sprintf("pca-resid %s %.2f", tf, frac), func(train [][]int32) scorer {
				m := newDenseMap(train, tf)
				X := make([][]float64, len(train))
				for i, t := range train {
					X[i] = m.vec(t)
				}
				p := fitPCA(X)
				r := p.components(frac)
				return func(ids []int32) float64 { return p.recon(m.vec(ids), r) }
			}})
		}
		for _, ridge := range []float64{0.01, 0.1} {
			ridge := ridge
			vs = append(vs, variant{fmt.Sprintf("maha %s ridge%.2f", tf, ridge), func(train [][]int32) scorer {
				m := newDenseMap(train, tf)
				X := make([][]float64, len(train))
				for i, t := range train {
					X[i] = m.vec(t)
				}
				p := fitPCA(X)
				return func(ids []int32) float64 { return p.maha(m.vec(ids), ridge) }
			}})
		}
		vs = append(vs, variant{"iforest " + tf, func(train [][]int32) scorer {
			m := newDenseMap(train, tf)
			X := make([][]float64, len(train))
			for i, t := range train {
				X[i] = m.vec(t)
			}
			f := fitIForest(X, 200, 256, 1)
			return func(ids []int32) float64 { return f.score(m.vec(ids)) }
		}})
	}
	// (2) kinds of novelty
	for _, n := range []int{3, 4, 6, 8} {
		n := n
		vs = append(vs, variant{fmt.Sprintf("unseen%d occ", n), func(train [][]int32) scorer {
			g := gramSet(train, n)
			return func(ids []int32) float64 {
				var u, tot float64
				for i := 0; i+n <= len(ids); i++ {
					tot++
					if !g[key(ids[i:i+n])] {
						u++
					}
				}
				return u / math.Max(tot, 1)
			}
		}})
		vs = append(vs, variant{fmt.Sprintf("unseen%d distinct", n), func(train [][]int32) scorer {
			g := gramSet(train, n)
			return func(ids []int32) float64 {
				d := ngrams(ids, n)
				var u float64
				for k := range d {
					if !g[k] {
						u++
					}
				}
				return u / math.Max(float64(len(d)), 1)
			}
		}})
		for _, agg := range []string{"mean", "max"} {
			agg := agg
			vs = append(vs, variant{fmt.Sprintf("unseen%d idf-%s occ", n, agg), func(train [][]int32) scorer {
				g := gramSet(train, n)
				idf := callIDF(train)
				return func(ids []int32) float64 {
					var u float64
					for i := 0; i+n <= len(ids); i++ {
						if g[key(ids[i:i+n])] {
							continue
						}
						var w float64
						for _, c := range ids[i : i+n] {
							if agg == "max" {
								w = math.Max(w, idf(c))
							} else {
								w += idf(c) / float64(n)
							}
						}
						u += w
					}
					return u / float64(len(ids))
				}
			}})
			vs = append(vs, variant{fmt.Sprintf("unseen%d idf-%s distinct", n, agg), func(train [][]int32) scorer {
				g := gramSet(train, n)
				idf := callIDF(train)
				return func(ids []int32) float64 {
					d := ngrams(ids, n)
					var u, tot float64
					for i := 0; i+n <= len(ids); i++ {
						k := key(ids[i : i+n])
						c, ok := d[k]
						if !ok {
							continue
						}
						delete(d, k)
						_ = c
						var w float64
						for _, c := range ids[i : i+n] {
							if agg == "max" {
								w = math.Max(w, idf(c))
							} else {
								w += idf(c) / float64(n)
							}
						}
						tot += w
						if !g[k] {
							u += w
						}
					}
					return u / math.Max(tot, 1e-9)
				}
			}})
		}
	}
	for _, D := range []int{2, 5, 10, 20} {
		D := D
		for _, mode := range []string{"occ", "distinct"} {
			mode := mode
			vs = append(vs, variant{fmt.Sprintf("unseen pairs%d %s", D, mode), func(train [][]int32) scorer {
				seen := map[uint64]bool{}
				for _, t := range train {
					for k := range pairs(t, D) {
						seen[k] = true
					}
				}
				return func(ids []int32) float64 {
					b := pairs(ids, D)
					var u, tot float64
					for k, v := range b {
						if mode == "distinct" {
							v = 1
						}
						tot += v
						if !seen[k] {
							u += v
						}
					}
					return u / math.Max(tot, 1)
				}
			}})
		}
	}
	// call classes
	vs = append(vs, variant{"class cover", func(train [][]int32) scorer {
		ct := make([][]int32, len(train))
		for i, t := range train {
			ct[i] = toClasses(t, cls)
		}
		a := exp.BuildSAM(ct)
		return func(ids []int32) float64 { return a.CoverSegs(toClasses(ids, cls)) }
	}})
	for _, n := range []int{4, 6, 8, 12} {
		n := n
		vs = append(vs, variant{fmt.Sprintf("class unseen%d occ", n), func(train [][]int32) scorer {
			ct := make([][]int32, len(train))
			for i, t := range train {
				ct[i] = toClasses(t, cls)
			}
			g := gramSet(ct, n)
			return func(ids []int32) float64 {
				c := toClasses(ids, cls)
				var u, tot float64
				for i := 0; i+n <= len(c); i++ {
					tot++
					if !g[key(c[i:i+n])] {
						u++
					}
				}
				return u / math.Max(tot, 1)
			}
		}})
	}
	for _, n := range []int{1, 3, 5} {
		n := n
		f := func(ids []int32) bag { return ngrams(toClasses(ids, cls), n) }
		vs = append(vs, bagKNN(fmt.Sprintf("knn class%d log-idf k1", n), f, "log", true, 1))
		vs = append(vs, bagKNN(fmt.Sprintf("knn class%d raw k5", n), f, "raw", false, 5))
	}
	return vs
}

// key packs an n-gram (n <= 6) exactly, longer ones by a 64-bit hash.
func key(g []int32) uint64 {
	if len(g) > 6 {
		h := uint64(14695981039346656037)
		for _, c := range g {
			h ^= uint64(c) + 1
			h *= 1099511628211
			h ^= h >> 29
		}
		return h
	}
	var k uint64
	for _, c := range g {
		k = k<<bits | uint64(c)
	}
	return k | uint64(len(g))<<60
}
