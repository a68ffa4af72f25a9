// Command ceiling measures how many traces are a contiguous run of some
// training trace: no model that scores what a trace does, trained on normal
// traces only, can rank such an attack above such a normal.
package main

import (
	"fmt"

	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

func main() {
	s, err := eval.LoadADFA(exp.Dir())
	if err != nil {
		panic(err)
	}
	voc, train := exp.TrainIDs(s)
	a := exp.BuildSAM(train)
	inside := func(ts []eval.Trace) (n int, fam map[string]int) {
		fam = map[string]int{}
		for _, t := range ts {
			if a.CoverSegs(voc.IDs(t.Syscalls, false))*float64(len(t.Syscalls)) == 1 {
				n++
				fam[t.Family]++
			}
		}
		return n, fam
	}
	nn, _ := inside(s.Validation)
	na, fams := inside(s.Attack)
	n0 := float64(nn) / float64(len(s.Validation))
	a0 := float64(na) / float64(len(s.Attack))
	fmt.Printf("normal validation traces inside a training trace: %d/%d (%.1f%%)\n", nn, len(s.Validation), 100*n0)
	fmt.Printf("attack traces inside a training trace: %d/%d (%.1f%%) %v\n", na, len(s.Attack), 100*a0, fams)
	// Best case for a model that scores such a trace as fully familiar: every
	// other attack above every normal, these attacks tied with those normals
	// and below the rest.
	fmt.Printf("AUC ceiling for such models: %.4f\n", 1-a0*(1-n0)-a0*n0/2)
}
