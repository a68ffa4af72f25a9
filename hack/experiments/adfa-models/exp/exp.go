// Package exp holds what the ADFA-LD experiments share: where the data is, the
// report line (AUC overall and per family, detection at 1% and 5% false
// alarms) and the suffix automaton of the training corpus.
package exp

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

// Dir is the shared ADFA-LD folder: $BULKHEAD_SHARED/datasets/adfa-ld, or
// ../shared beside the clone.
func Dir() string {
	shared := os.Getenv("BULKHEAD_SHARED")
	if shared == "" {
		shared = "../../../../shared"
	}
	return filepath.Join(shared, "datasets", "adfa-ld")
}

// Line is one result row: normal holds the validation scores, attack the
// attack scores in the order of s.Attack.
func Line(name string, s *eval.Split, normal, attack []float64) string {
	d1, _ := eval.DetectionAt(normal, attack, 0.01)
	d5, _ := eval.DetectionAt(normal, attack, 0.05)
	line := fmt.Sprintf("%-16s AUC %.4f DR1 %.3f DR5 %.3f |", name, eval.AUC(normal, attack), d1, d5)
	for _, f := range eval.FamilyResults(normal, s.Attack, attack) {
		line += fmt.Sprintf(" %s %.3f", f.Family, f.AUC)
	}
	return line
}

// Quantiles prints the 10th to 99th percentiles of x.
func Quantiles(x []float64) string {
	y := slices.Clone(x)
	slices.Sort(y)
	out := ""
	for _, q := range []float64{0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99} {
		out += fmt.Sprintf(" q%.0f=%.3g", q*100, y[int(q*float64(len(y)-1))])
	}
	return out
}

// Vocab numbers system calls from 1 in the order training first uses them.
type Vocab map[string]int32

// Unseen is the id of a call training never used: no SAM path has it.
const Unseen = -2

// IDs maps calls to ids, numbering new ones when learn is set.
func (v Vocab) IDs(calls []string, learn bool) []int32 {
	out := make([]int32, len(calls))
	for i, c := range calls {
		id, ok := v[c]
		switch {
		case !ok && learn:
			id = int32(len(v) + 1)
			v[c] = id
		case !ok:
			id = Unseen
		}
		out[i] = id
	}
	return out
}

// TrainIDs numbers the training traces' calls.
func TrainIDs(s *eval.Split) (Vocab, [][]int32) {
	v := Vocab{}
	train := make([][]int32, len(s.Train))
	for i, t := range s.Train {
		train[i] = v.IDs(t.Syscalls, true)
	}
	return v, train
}
