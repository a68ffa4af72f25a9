package main

import (
	"fmt"
	"math"
	"sort"
)

// runCalib: local calibration. Each training trace gets an out-of-fold NLL
// (5-fold WB LMs), and a test trace's global NLL is compared with the
// out-of-fold NLLs of its k nearest training traces: "how surprising is this
// trace compared with how surprising similar normal traces are".
func runCalib(d *data, gscore []float64) {
	const F = 5
	oof := make([]float64, len(d.train))
	var buf []float64
	for f := 0; f < F; f++ {
		lm := newLM(*flN)
		for i, ids := range d.train {
			if i%F != f {
				lm.addTrace(ids)
			}
		}
		for i, ids := range d.train {
			if i%F == f {
				buf = lm.nll(ids, d.V, nil, buf)
				oof[i] = meanCap(buf)
			}
		}
	}
	sc := newTable(len(d.tests))
	type nb struct {
		i int
		s float64
	}
	nbs := make([]nb, len(d.train))
	for i, ids := range d.tests {
		set := ngramSet(ids, *flSimN)
		for j := range d.train {
			nbs[j] = nb{j, sim(set, d.trSets[j])}
		}
		sort.Slice(nbs, func(a, b int) bool { return nbs[a].s > nbs[b].s })
		for _, k := range ints(*flK) {
			var m, ws, wm float64
			for _, n := range nbs[:k] {
				m += oof[n.i]
				ws += n.s
				wm += n.s * oof[n.i]
			}
			m /= float64(k)
			sc.add(fmt.Sprintf("g-oof%d", k), i, gscore[i]-m)
			sc.add(fmt.Sprintf("g/oof%d", k), i, gscore[i]/math.Max(0.05, m))
			if ws > 0 {
				sc.add(fmt.Sprintf("g-woof%d", k), i, gscore[i]-wm/ws)
			}
		}
	}
	for _, k := range sc.names {
		report(k, d, sc.scores[k])
	}
}
