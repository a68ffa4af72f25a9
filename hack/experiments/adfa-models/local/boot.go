package main

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

// bootDiff: paired bootstrap (resampling normal and attack traces) of
// AUC(a) - AUC(b); prints the mean and the 2.5/97.5% quantiles.
func bootDiff(name string, d *data, a, b []float64) {
	rng := rand.New(rand.NewPCG(1, 2))
	nv, na := d.nVal, len(d.tests)-d.nVal
	var diffs []float64
	for r := 0; r < 200; r++ {
		an, aa, bn, ba := make([]float64, nv), make([]float64, na), make([]float64, nv), make([]float64, na)
		for i := range an {
			j := rng.IntN(nv)
			an[i], bn[i] = a[j], b[j]
		}
		for i := range aa {
			j := nv + rng.IntN(na)
			aa[i], ba[i] = a[j], b[j]
		}
		diffs = append(diffs, eval.AUC(an, aa)-eval.AUC(bn, ba))
	}
	sort.Float64s(diffs)
	fmt.Printf("bootstrap %s - global: median %+.4f, 95%% [%+.4f, %+.4f]\n", name, diffs[100], diffs[5], diffs[194])
}
