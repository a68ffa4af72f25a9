// Command cover tries sequence covering (Marteau 2019) on ADFA-LD: a suffix
// automaton of the training traces gives, for each test call, the longest
// training substring ending there, and the greedy covering segment count.
package main

import (
	"fmt"
	"math"

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
	fmt.Println("states", len(a.Len))
	names := []string{"segs/n", "inv", "-logl", "short4", "short8", "short16"}
	score := func(t eval.Trace) []float64 {
		seq := voc.IDs(t.Syscalls, false)
		n := float64(len(seq))
		// Matching statistics: l is the longest training run ending here.
		st, l := int32(0), int32(0)
		var inv, logl, short4, short8, short16 float64
		for _, c := range seq {
			for st != -1 {
				if nx, ok := a.Next[st][c]; ok {
					st = nx
					l++
					break
				}
				st = a.Link[st]
				if st != -1 {
					l = a.Len[st]
				}
			}
			if st == -1 {
				st, l = 0, 0
			}
			inv += 1 / float64(l+1)
			logl -= math.Log(float64(l + 1))
			for _, sh := range []struct {
				v *float64
				k int32
			}{{&short4, 4}, {&short8, 8}, {&short16, 16}} {
				if l < sh.k {
					*sh.v++
				}
			}
		}
		return []float64{a.CoverSegs(seq), inv / n, logl / n, short4 / n, short8 / n, short16 / n}
	}
	var ns, as [][]float64
	for _, t := range s.Validation {
		ns = append(ns, score(t))
	}
	for _, t := range s.Attack {
		as = append(as, score(t))
	}
	col := func(x [][]float64, k int) []float64 {
		o := make([]float64, len(x))
		for i := range x {
			o[i] = x[i][k]
		}
		return o
	}
	for k, name := range names {
		fmt.Println(exp.Line(name, s, col(ns, k), col(as, k)))
	}
	fmt.Println("normal segs/n", exp.Quantiles(col(ns, 0)))
	fmt.Println("attack segs/n", exp.Quantiles(col(as, 0)))
}
