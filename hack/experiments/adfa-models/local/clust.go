package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// cluster: average-linkage agglomerative clustering of the training traces on
// Jaccard distance of their n-gram sets, cut at distance th.
func cluster(d *data, th float64) [][]int {
	n := len(d.train)
	dist := make([][]float64, n)
	for i := range dist {
		dist[i] = make([]float64, n)
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			in := float64(inter(d.trSets[i], d.trSets[j]))
			u := float64(len(d.trSets[i])+len(d.trSets[j])) - in
			x := 1 - in/math.Max(1, u)
			dist[i][j], dist[j][i] = x, x
		}
	}
	members := make([][]int, n)
	alive := make([]bool, n)
	for i := range members {
		members[i] = []int{i}
		alive[i] = true
	}
	for {
		bi, bj, bd := -1, -1, math.Inf(1)
		for i := 0; i < n; i++ {
			if !alive[i] {
				continue
			}
			for j := i + 1; j < n; j++ {
				if alive[j] && dist[i][j] < bd {
					bi, bj, bd = i, j, dist[i][j]
				}
			}
		}
		if bi < 0 || bd > th {
			break
		}
		ni, nj := float64(len(members[bi])), float64(len(members[bj]))
		for k := 0; k < n; k++ {
			if alive[k] && k != bi && k != bj {
				x := (ni*dist[bi][k] + nj*dist[bj][k]) / (ni + nj)
				dist[bi][k], dist[k][bi] = x, x
			}
		}
		members[bi] = append(members[bi], members[bj]...)
		alive[bj] = false
	}
	var out [][]int
	for i := range members {
		if alive[i] {
			out = append(out, members[i])
		}
	}
	sort.Slice(out, func(a, b int) bool { return len(out[a]) > len(out[b]) })
	return out
}

func runClust(d *data, gscore []float64) {
	sws := floats(*flSw)
	for _, th := range floats(*flTh) {
		cl := cluster(d, th)
		sizes := []int{}
		for _, c := range cl {
			sizes = append(sizes, len(c))
		}
		if len(sizes) > 15 {
			sizes = sizes[:15]
		}
		fmt.Printf("th %.2f: %d clusters, largest %v\n", th, len(cl), sizes)
		K := len(cl)
		lms := make([]*wbLM, K)
		for k, c := range cl {
			lms[k] = newLM(*flN)
			for _, i := range c {
				lms[k].addTrace(d.train[i])
			}
		}
		// n-gram (n = N+1) -> bitmask of clusters holding it (first 64 clusters)
		W := *flN + 1
		mask := map[uint64]uint64{}
		whash := func(ids []int32, t int) uint64 {
			h := uint64(5)
			for j := max(0, t-W+1); j <= t; j++ {
				h = mix(h, uint64(ids[j])+1)
			}
			return h
		}
		for k, c := range cl {
			if k >= 64 {
				break
			}
			for _, i := range c {
				for t := 1; t < len(d.train[i]); t++ {
					mask[whash(d.train[i], t)] |= 1 << uint(k)
				}
			}
		}
		sc := newTable(len(d.tests))
		start := time.Now()
		var ks []uint64
		cost := make([]float64, K)
		costP := make([]float64, K)
		vit := make([][]float64, len(sws))
		vitP := make([][]float64, len(sws))
		for i := range sws {
			vit[i] = make([]float64, K)
			vitP[i] = make([]float64, K)
		}
		for i, ids := range d.tests {
			for k := range cost {
				cost[k], costP[k] = 0, 0
			}
			for s := range sws {
				clear(vit[s])
				clear(vitP[s])
			}
			uni := 1 / float64(d.V)
			cb := make([]float64, K)
			cpu := make([]float64, K)
			for t := 1; t < len(ids); t++ {
				ks = keys(ids[:t], *flN, ks)
				for k, lm := range lms {
					cb[k] = math.Min(*flCap, -math.Log(math.Max(1e-30, lm.prob(ks, ids[t], d.gP[i][t-1]))))
					cpu[k] = math.Min(*flCap, -math.Log(math.Max(1e-30, lm.prob(ks, ids[t], uni))))
					cost[k] += cb[k]
					costP[k] += cpu[k]
				}
				// Viterbi over programs: a switch costs sw nats.
				for s, sw := range sws {
					for _, v := range [][]float64{vit[s], vitP[s]} {
						c := cb
						if &v[0] == &vitP[s][0] {
							c = cpu
						}
						best := math.Inf(1)
						for _, x := range v {
							best = math.Min(best, x)
						}
						for k := range v {
							v[k] = math.Min(v[k], best+sw) + c[k]
						}
					}
				}
			}
			n := float64(len(ids) - 1)
			mn, mnP := math.Inf(1), math.Inf(1)
			for k := range cost {
				mn = math.Min(mn, cost[k]/n)
				mnP = math.Min(mnP, costP[k]/n)
			}
			sc.add("min-backoff", i, mn)
			sc.add("splice(minP-g)", i, mnP-gscore[i])
			if K <= 64 {
				miss := make([]int, K)
				gmiss := 0
				for t := 1; t < len(ids); t++ {
					m, ok := mask[whash(ids, t)]
					if !ok {
						gmiss++
					}
					for k := 0; k < K; k++ {
						if m&(1<<uint(k)) == 0 {
							miss[k]++
						}
					}
				}
				mm := miss[0]
				for _, x := range miss {
					mm = min(mm, x)
				}
				sc.add("gram-miss-global", i, float64(gmiss)/n)
				sc.add("gram-miss-mincl", i, float64(mm)/n)
				sc.add("gram-miss-sum", i, float64(mm+gmiss)/n)
			}
			sc.add("min-pure", i, mnP)
			sc.add("min-b+global", i, mn+gscore[i])
			for s, sw := range sws {
				b, bp := math.Inf(1), math.Inf(1)
				for k := range vit[s] {
					b = math.Min(b, vit[s][k])
					bp = math.Min(bp, vitP[s][k])
				}
				sc.add(fmt.Sprintf("vit%g-backoff", sw), i, b/n)
				sc.add(fmt.Sprintf("vit%g-pure", sw), i, bp/n)
			}
		}
		fmt.Printf("  all cluster scores %.0f ns/call (K=%d, unoptimised)\n", float64(time.Since(start).Nanoseconds())/float64(d.calls), K)
		for _, nm := range sc.names {
			report(nm, d, sc.scores[nm])
		}
		for _, nm := range sc.names {
			if strings.HasPrefix(nm, "vit") && strings.HasSuffix(nm, "backoff") || nm == "min-backoff" {
				bootDiff(nm, d, sc.scores[nm], gscore)
			}
		}
	}
}
