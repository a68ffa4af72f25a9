// Command local tries per-program / local baselines on ADFA-LD: the training
// traces are grouped (k nearest neighbours of each test trace, or clusters),
// each group gets its own Witten-Bell LM backed off to the global one, and a
// test trace is scored against its best-matching group(s).
package main

import (
	"flag"
	"fmt"
	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

var (
	flN    = flag.Int("N", 6, "LM context order")
	flSimN = flag.Int("simn", 3, "n for n-gram-set similarity")
	flSim  = flag.String("sim", "contain", "jaccard | contain (fraction of the test trace's n-grams in the training trace)")
	flK    = flag.String("k", "1,3,5,10,20,50", "kNN sizes")
	flCap  = flag.Float64("cap", 20, "per-call NLL cap")
	flMode = flag.String("mode", "knn", "knn | clust")
	flTh   = flag.String("th", "0.3,0.5,0.7", "clustering: average-linkage Jaccard-distance cut thresholds")
	flSw   = flag.String("sw", "2,4,8", "clustering: switch penalties (nats) for the program-switching Viterbi")
)

type vocab map[string]int32

// ids: 1 = BOS, 0 = unknown, >= 2 known.
func (v vocab) ids(toks []string) []int32 {
	out := make([]int32, 0, len(toks)+1)
	out = append(out, 1)
	for _, t := range toks {
		out = append(out, v[t])
	}
	return out
}

func ngramSet(ids []int32, n int) []uint64 {
	m := map[uint64]bool{}
	for i := 1; i+n <= len(ids); i++ {
		h := uint64(99)
		for _, x := range ids[i : i+n] {
			h = mix(h, uint64(x)+1)
		}
		m[h] = true
	}
	out := make([]uint64, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func inter(a, b []uint64) int {
	i, j, n := 0, 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			n++
			i++
			j++
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return n
}

func sim(test, train []uint64) float64 {
	in := float64(inter(test, train))
	if *flSim == "jaccard" {
		return in / math.Max(1, float64(len(test)+len(train))-in)
	}
	return in / math.Max(1, float64(len(test)))
}

func meanCap(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += math.Min(v, *flCap)
	}
	return s / math.Max(1, float64(len(x)))
}

func ints(s string) []int {
	var o []int
	for _, f := range strings.Split(s, ",") {
		v, _ := strconv.Atoi(f)
		o = append(o, v)
	}
	return o
}

func floats(s string) []float64 {
	var o []float64
	for _, f := range strings.Split(s, ",") {
		v, _ := strconv.ParseFloat(f, 64)
		o = append(o, v)
	}
	return o
}

type data struct {
	s      *eval.Split
	V      int
	train  [][]int32
	trSets [][]uint64
	tests  [][]int32 // validation then attack
	nVal   int
	global *wbLM
	gP     [][]float64 // per test trace, per call global probability
	calls  int
}

func main() {
	flag.Parse()
	s, err := eval.LoadADFA(exp.Dir())
	if err != nil {
		panic(err)
	}
	voc := vocab{}
	for _, t := range s.Train {
		for _, c := range t.Syscalls {
			if _, ok := voc[c]; !ok {
				voc[c] = int32(len(voc) + 2)
			}
		}
	}
	d := &data{s: s, V: len(voc) + 2, nVal: len(s.Validation)}
	d.global = newLM(*flN)
	for _, t := range s.Train {
		ids := voc.ids(t.Syscalls)
		d.train = append(d.train, ids)
		d.trSets = append(d.trSets, ngramSet(ids, *flSimN))
		d.global.addTrace(ids)
	}
	for _, t := range append(append([]eval.Trace{}, s.Validation...), s.Attack...) {
		d.tests = append(d.tests, voc.ids(t.Syscalls))
	}
	// global per-call probabilities (used as back-off base of local LMs)
	start := time.Now()
	var buf []float64
	gscore := make([]float64, len(d.tests))
	for i, ids := range d.tests {
		buf = d.global.nll(ids, d.V, nil, buf)
		gscore[i] = meanCap(buf)
		p := make([]float64, len(buf))
		for j, x := range buf {
			p[j] = math.Exp(-x)
		}
		d.gP = append(d.gP, p)
		d.calls += len(buf)
	}
	gns := time.Since(start).Seconds() * 1e9 / float64(d.calls)
	fmt.Printf("V=%d N=%d test calls %d, global LM %.0f ns/call\n", d.V, *flN, d.calls, gns)
	report("global", d, gscore)
	switch *flMode {
	case "knn":
		runKNN(d, gscore)
	case "calib":
		runCalib(d, gscore)
	case "clust":
		runClust(d, gscore)
	}
}

func runKNN(d *data, gscore []float64) {
	ks := ints(*flK)
	sc := newTable(len(d.tests))
	var simT, lmT time.Duration
	lmCalls := map[int]int{}
	var buf []float64
	type nb struct {
		i int
		s float64
	}
	nbs := make([]nb, len(d.train))
	for i, ids := range d.tests {
		t0 := time.Now()
		set := ngramSet(ids, *flSimN)
		for j := range d.train {
			nbs[j] = nb{j, sim(set, d.trSets[j])}
		}
		sort.Slice(nbs, func(a, b int) bool { return nbs[a].s > nbs[b].s })
		simT += time.Since(t0)
		sc.add("1-maxsim", i, 1-nbs[0].s)
		for _, k := range ks {
			t1 := time.Now()
			lm := newLM(*flN)
			for _, n := range nbs[:k] {
				lm.addTrace(d.train[n.i])
			}
			buf = lm.nll(d.tests[i], d.V, d.gP[i], buf)
			lmT += time.Since(t1)
			lmCalls[k] += len(buf)
			l := meanCap(buf)
			sc.add(fmt.Sprintf("knn%d", k), i, l)
			buf = lm.nll(d.tests[i], d.V, nil, buf)
			sc.add(fmt.Sprintf("knn%d-pure", k), i, meanCap(buf))
		}
	}
	fmt.Printf("similarity search %.0f ns/call (whole trace vs %d training sets); local LM build+score (all k) %.0f ns/call\n",
		float64(simT.Nanoseconds())/float64(d.calls), len(d.train), float64(lmT.Nanoseconds())/float64(d.calls))
	for _, k := range sc.names {
		report(k, d, sc.scores[k])
	}
}

func report(k string, d *data, sc []float64) {
	fmt.Println(exp.Line(k, d.s, sc[:d.nVal], sc[d.nVal:]))
}

// table collects named score columns over the test traces, in the order
// they were first added.
type table struct {
	n      int
	names  []string
	scores map[string][]float64
}

func newTable(n int) *table { return &table{n: n, scores: map[string][]float64{}} }

func (t *table) add(name string, i int, v float64) {
	if t.scores[name] == nil {
		t.scores[name] = make([]float64, t.n)
		t.names = append(t.names, name)
	}
	t.scores[name][i] = v
}
