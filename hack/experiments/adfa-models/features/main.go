// Command features tries trace-level representations (histograms, n-gram
// bags, discontiguous pairs, call classes) scored by one-class methods fit on
// the ADFA-LD training traces only, and their fusion with sequence covering.
//
//	go run ./features [-only REGEXP] [-fuse] [-cv 5]
package main

import (
	"flag"
	"fmt"
	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"math"
	"math/rand"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

type scorer func(ids []int32) float64

type variant struct {
	name string
	fit  func(train [][]int32) scorer
}

type result struct {
	name      string
	n, a      []float64
	oof       []float64 // out-of-fold training scores (calibration), nil unless -cv
	nsPerCall float64
	trainSecs float64
}

var (
	only    = flag.String("only", "", "run variants whose name matches")
	fuse    = flag.Bool("fuse", false, "fuse every variant with the covering score")
	cv      = flag.Int("cv", 0, "folds for out-of-fold training scores (deployable calibrated fusion)")
	verbose = flag.Bool("v", false, "print score quantiles")
	combos  = flag.String("combo", "", "fusions to report: variant names joined by '+', fusions separated by ';'")
	diag    = flag.Bool("diag", false, "Spearman of every score with distinct-call count and log length")
)

func toIDs(ts []eval.Trace) [][]int32 {
	o := make([][]int32, len(ts))
	for i, t := range ts {
		o[i] = make([]int32, len(t.Syscalls))
		for j, c := range t.Syscalls {
			n, err := strconv.Atoi(c)
			if err != nil || n < 0 || n >= 1<<bits-1 {
				n = 1<<bits - 1
			}
			o[i][j] = int32(n)
		}
	}
	return o
}

func main() {
	flag.Parse()
	s, err := eval.LoadADFA(exp.Dir())
	if err != nil {
		panic(err)
	}
	train, val, atk := toIDs(s.Train), toIDs(s.Validation), toIDs(s.Attack)
	cls, _ := loadClasses(filepath.Join(exp.Dir(), "syscalls-i386.csv"))
	var testCalls int
	for _, t := range append(append([][]int32{}, val...), atk...) {
		testCalls += len(t)
	}
	var trainCalls int
	for _, t := range train {
		trainCalls += len(t)
	}
	fmt.Printf("train %d traces %d calls; test %d+%d traces %d calls\n", len(train), trainCalls, len(val), len(atk), testCalls)

	vs := variants(cls)
	re := regexp.MustCompile(*only)
	var results []*result
	var cover *result
	for _, v := range vs {
		if v.name != "cover" && !re.MatchString(v.name) {
			continue
		}
		r := run(v, train, val, atk, testCalls)
		if v.name == "cover" {
			cover = r
		}
		results = append(results, r)
		reportLine(r, s)
	}
	byName := map[string]*result{}
	for _, r := range results {
		byName[r.name] = r
	}
	if *diag {
		var dist, ln []float64
		for _, t := range append(append([][]int32{}, val...), atk...) {
			seen := map[int32]bool{}
			for _, c := range t {
				seen[c] = true
			}
			dist = append(dist, float64(len(seen)))
			ln = append(ln, math.Log(float64(len(t))))
		}
		fmt.Println("\n# confound check: spearman with distinct calls / log length (pooled test)")
		for _, r := range results {
			x := append(append([]float64{}, r.n...), r.a...)
			fmt.Printf("%-34s rho_distinct %+.2f rho_loglen %+.2f\n", r.name, spearman(x, dist), spearman(x, ln))
		}
	}
	if *combos != "" {
		fmt.Println("\n# fusions: rank = pooled-test rank average (transductive); cal = sum of -log training tail prob (deployable, needs -cv)")
		for _, c := range strings.Split(*combos, ";") {
			var rs []*result
			for _, n := range strings.Split(c, "+") {
				r, ok := byName[strings.TrimSpace(n)]
				if !ok {
					panic("no variant " + n)
				}
				rs = append(rs, r)
			}
			for i := range rs {
				for j := i + 1; j < len(rs); j++ {
					fmt.Printf("  rho(%s, %s) = %.2f\n", rs[i].name, rs[j].name, spearman(append(append([]float64{}, rs[i].n...), rs[i].a...), append(append([]float64{}, rs[j].n...), rs[j].a...)))
				}
			}
			f := rankFuse(rs...)
			f.name = "rank(" + c + ")"
			reportLine(f, s)
			if rs[0].oof != nil {
				g := calFuse(rs...)
				g.name = "cal(" + c + ")"
				reportLine(g, s)
				if cover != nil {
					fmt.Println("   ", bootDelta(g, cover))
				}
			}
		}
	}
	if *fuse && cover != nil {
		fmt.Println("\n# fusion with cover: spearman(test), rank-average AUC (transductive, analysis only)")
		for _, r := range results {
			if r == cover {
				continue
			}
			rho := spearman(append(append([]float64{}, r.n...), r.a...), append(append([]float64{}, cover.n...), cover.a...))
			f := rankFuse(r, cover)
			f.name = fmt.Sprintf("rank(%s,cover) rho=%.2f", r.name, rho)
			reportLine(f, s)
			if r.oof != nil && cover.oof != nil {
				g := calFuse(r, cover)
				g.name = fmt.Sprintf("cal(%s,cover)", r.name)
				reportLine(g, s)
			}
		}
	}
}

func run(v variant, train, val, atk [][]int32, testCalls int) *result {
	t0 := time.Now()
	sc := v.fit(train)
	r := &result{name: v.name, trainSecs: time.Since(t0).Seconds()}
	t1 := time.Now()
	for _, t := range val {
		r.n = append(r.n, sc(t))
	}
	for _, t := range atk {
		r.a = append(r.a, sc(t))
	}
	r.nsPerCall = float64(time.Since(t1).Nanoseconds()) / float64(testCalls)
	if *cv > 1 {
		r.oof = make([]float64, len(train))
		for f := 0; f < *cv; f++ {
			var tr [][]int32
			var ho []int
			for i, t := range train {
				if i%*cv == f {
					ho = append(ho, i)
				} else {
					tr = append(tr, t)
				}
			}
			s := v.fit(tr)
			for _, i := range ho {
				r.oof[i] = s(train[i])
			}
		}
	}
	return r
}

func reportLine(r *result, s *eval.Split) {
	d1, _ := eval.DetectionAt(r.n, r.a, 0.01)
	d5, _ := eval.DetectionAt(r.n, r.a, 0.05)
	line := fmt.Sprintf("%-34s AUC %.4f DR1 %.3f DR5 %.3f |", r.name, eval.AUC(r.n, r.a), d1, d5)
	for _, f := range eval.FamilyResults(r.n, s.Attack, r.a) {
		line += fmt.Sprintf(" %.3f", f.AUC)
	}
	if r.nsPerCall > 0 {
		line += fmt.Sprintf(" | %6.0f ns/call train %.1fs", r.nsPerCall, r.trainSecs)
	}
	fmt.Println(line)
	if *verbose {
		fmt.Println("   normal", exp.Quantiles(r.n))
		fmt.Println("   attack", exp.Quantiles(r.a))
	}
}

func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && x[idx[j]] == x[idx[i]] {
			j++
		}
		for k := i; k < j; k++ {
			r[idx[k]] = float64(i+j-1) / 2
		}
		i = j
	}
	return r
}

func spearman(x, y []float64) float64 {
	rx, ry := ranks(x), ranks(y)
	var mx, my float64
	for i := range rx {
		mx += rx[i]
		my += ry[i]
	}
	mx /= float64(len(rx))
	my /= float64(len(ry))
	var sxy, sxx, syy float64
	for i := range rx {
		sxy += (rx[i] - mx) * (ry[i] - my)
		sxx += (rx[i] - mx) * (rx[i] - mx)
		syy += (ry[i] - my) * (ry[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}

// rankFuse averages the ranks over the pooled test set (transductive).
func rankFuse(rs ...*result) *result {
	var xs [][]float64
	for _, r := range rs {
		xs = append(xs, ranks(append(append([]float64{}, r.n...), r.a...)))
	}
	o := &result{}
	for i := range xs[0] {
		var v float64
		for _, x := range xs {
			v += x[i]
		}
		if i < len(rs[0].n) {
			o.n = append(o.n, v)
		} else {
			o.a = append(o.a, v)
		}
	}
	return o
}

// cdf is the fraction of out-of-fold training scores below x (ties half),
// with add-one smoothing so the tail stays ordered by -log(1-cdf).
func cdf(ref []float64, x float64) float64 {
	lo := sort.SearchFloat64s(ref, x)
	hi := lo
	for hi < len(ref) && ref[hi] == x {
		hi++
	}
	return (float64(lo) + float64(hi-lo)/2 + 0.5) / float64(len(ref)+1)
}

// calFuse maps each score to its training (out-of-fold) tail probability and
// sums -log tail: deployable, no test statistics. Beyond the training
// range, the raw score breaks ties through a small z-score term.
func calFuse(rs ...*result) *result {
	o := &result{}
	type cal struct {
		ref    []float64
		mu, sd float64
	}
	cs := make([]cal, len(rs))
	for i, r := range rs {
		ref := append([]float64(nil), r.oof...)
		sort.Float64s(ref)
		var mu, sd float64
		for _, v := range ref {
			mu += v / float64(len(ref))
		}
		for _, v := range ref {
			sd += (v - mu) * (v - mu) / float64(len(ref))
		}
		cs[i] = cal{ref, mu, math.Sqrt(sd) + 1e-12}
	}
	f := func(j int, atk bool) float64 {
		var s float64
		for i, r := range rs {
			x := r.n
			if atk {
				x = r.a
			}
			v := x[j]
			s += -math.Log(1-cdf(cs[i].ref, v)) + 1e-3*math.Max(0, (v-cs[i].mu)/cs[i].sd)
		}
		return s
	}
	for j := range rs[0].n {
		o.n = append(o.n, f(j, false))
	}
	for j := range rs[0].a {
		o.a = append(o.a, f(j, true))
	}
	return o
}

// bootDelta is a paired bootstrap (resampling normal and attack traces) of
// AUC(x) - AUC(ref), plus the AUC on the two halves (even/odd index) of the
// normal validation traces.
func bootDelta(x, ref *result) string {
	rng := rand.New(rand.NewSource(7))
	var ds []float64
	for b := 0; b < 300; b++ {
		var xn, xa, rn, ra []float64
		for range x.n {
			i := rng.Intn(len(x.n))
			xn, rn = append(xn, x.n[i]), append(rn, ref.n[i])
		}
		for range x.a {
			i := rng.Intn(len(x.a))
			xa, ra = append(xa, x.a[i]), append(ra, ref.a[i])
		}
		ds = append(ds, eval.AUC(xn, xa)-eval.AUC(rn, ra))
	}
	sort.Float64s(ds)
	half := func(r *result, p int) float64 {
		var n []float64
		for i, v := range r.n {
			if i%2 == p {
				n = append(n, v)
			}
		}
		return eval.AUC(n, r.a)
	}
	return fmt.Sprintf("delta AUC vs cover %+.4f [95%% %+.4f, %+.4f]; halves %.4f/%.4f (cover %.4f/%.4f)",
		eval.AUC(x.n, x.a)-eval.AUC(ref.n, ref.a), ds[7], ds[292], half(x, 0), half(x, 1), half(ref, 0), half(ref, 1))
}
