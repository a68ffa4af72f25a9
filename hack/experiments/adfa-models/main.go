package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"github.com/bulkhead-dev/bulkhead/internal/eval"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"time"
)

type vocab map[string]int

func (v vocab) ids(toks []string) []int {
	out := make([]int, 0, len(toks)+1)
	out = append(out, 1)
	for _, t := range toks {
		out = append(out, v[t]) // 0 if unknown
	}
	return out
}

func aggregate(nll []float64, capv float64) map[string]float64 {
	m := map[string]float64{}
	c := make([]float64, len(nll))
	var s float64
	for i, x := range nll {
		c[i] = math.Min(x, capv)
		s += c[i]
	}
	m["mean"] = s / float64(len(c))
	for _, w := range []int{10, 30, 100} {
		if len(c) <= w {
			m[fmt.Sprintf("win%d", w)] = m["mean"]
			continue
		}
		var ws, best float64
		for i, x := range c {
			ws += x
			if i >= w {
				ws -= c[i-w]
			}
			if i >= w-1 && ws > best {
				best = ws
			}
		}
		m[fmt.Sprintf("win%d", w)] = best / float64(w)
	}
	sc := append([]float64(nil), c...)
	sort.Float64s(sc)
	k := max(1, len(sc)/10)
	var t float64
	for _, x := range sc[len(sc)-k:] {
		t += x
	}
	m["top10pct"] = t / float64(k)
	return m
}

func main() {
	H := flag.Int("H", 32, "hidden")
	epochs := flag.Int("epochs", 10, "")
	lr := flag.Float64("lr", 0.003, "")
	T := flag.Int("T", 50, "bptt")
	seed := flag.Uint64("seed", 1, "")
	holdout := flag.Bool("holdout", false, "train on 80%, report held-out NLL per epoch, no attack scoring")
	capv := flag.Float64("cap", 20, "per-event NLL cap")
	lm := flag.String("lm", "gru", "gru | wb")
	wbN := flag.Int("wbn", 6, "wb context order")
	cacheK := flag.Int("cachek", -1, "per-trace cache order (-1 = none)")
	mode := flag.String("mode", "nll", "nll | excess | rank")
	save := flag.String("save", "", "")
	load := flag.String("load", "", "")
	out := flag.String("out", "", "write per-trace scores json")
	classes := flag.Int("classes", 0, "class-based softmax classes (0 = full)")
	flag.Parse()
	s, err := eval.LoadADFA(exp.Dir())
	if err != nil {
		panic(err)
	}
	voc := vocab{}
	for _, t := range s.Train {
		for _, c := range t.Syscalls {
			if _, ok := voc[c]; !ok {
				voc[c] = len(voc) + 2
			}
		}
	}
	V := len(voc) + 2
	rng := rand.New(rand.NewPCG(*seed, 7))
	train := s.Train
	var held []eval.Trace
	if *holdout {
		perm := rng.Perm(len(train))
		var tr []eval.Trace
		for i, p := range perm {
			if i%5 == 0 {
				held = append(held, train[p])
			} else {
				tr = append(tr, train[p])
			}
		}
		train = tr
	}
	var model *wb
	if *lm == "wb" {
		model = newWB(*wbN)
		for _, t := range train {
			ids := voc.ids(t.Syscalls)
			for i := 0; i+1 < len(ids); i++ {
				lo := max(0, i+1-*wbN)
				model.add(ids[lo:i+1], ids[i+1])
			}
		}
		*epochs = 0
	}
	g := NewGRU(V, *H, rng)
	if *classes > 0 {
		freq := make([]float64, V)
		for i := range freq {
			freq[i] = 0.5
		}
		for _, t := range train {
			for _, id := range voc.ids(t.Syscalls)[1:] {
				freq[id]++
			}
		}
		g.SetClasses(*classes, freq, rng)
	}
	trn := newTrainer(g, *T, float32(*lr))
	seqs := make([][]int, len(train))
	for i, t := range train {
		seqs[i] = voc.ids(t.Syscalls)
	}
	if *load != "" {
		g = loadGRU(*load)
		*epochs = 0
	}
	start := time.Now()
	var buf []float64
	for ep := 0; ep < *epochs; ep++ {
		// linear decay over last half
		if ep >= *epochs/2 {
			trn.lr = float32(*lr) * float32(*epochs-ep) / float32(*epochs-*epochs/2+1)
		}
		order := rng.Perm(len(seqs))
		var L float64
		var n int
		for _, i := range order {
			l, c := trn.trainSeq(seqs[i], *T)
			L += l
			n += c
		}
		msg := fmt.Sprintf("epoch %d train nll %.4f  %.1fs", ep, L/float64(n), time.Since(start).Seconds())
		if *holdout {
			var hl float64
			var hn int
			for _, t := range held {
				buf = g.NLL(voc.ids(t.Syscalls), buf)
				for _, x := range buf {
					hl += math.Min(x, *capv)
					hn++
				}
			}
			msg += fmt.Sprintf(" held nll %.4f", hl/float64(hn))
		}
		fmt.Fprintln(os.Stderr, msg)
	}
	trainSec := time.Since(start).Seconds()
	if *save != "" {
		saveGRU(g, *save)
	}
	if *holdout {
		return
	}
	score := func(ts []eval.Trace) []map[string]float64 {
		r := make([]map[string]float64, len(ts))
		for i, t := range ts {
			ids := voc.ids(t.Syscalls)
			if model != nil {
				buf = buf[:0]
				pd := make([]float64, V)
				for j := 0; j+1 < len(ids); j++ {
					lo := max(0, j+1-*wbN)
					switch *mode {
					case "nll":
						buf = append(buf, -math.Log(model.prob(ids[lo:j+1], ids[j+1], 1.0/float64(V))))
					case "excess", "rank":
						model.dist(ids[lo:j+1], pd)
						e, r := excess(pd, ids[j+1])
						if *mode == "rank" {
							e = r
						}
						buf = append(buf, e)
					}
				}
			} else {
				buf = g.NLL(ids, buf)
			}
			if *cacheK >= 0 {
				buf = cacheNLL(ids, append([]float64(nil), buf...), *cacheK, nil)
			}
			r[i] = aggregate(buf, *capv)
			nov, distinct := 0, map[int]int{}
			for j, x := range buf {
				if x > 4 {
					nov++
				}
				distinct[ids[j+1]]++
			}
			r[i]["nov4"] = float64(nov) / float64(len(buf))
			r[i]["distinct"] = float64(len(distinct))
			r[i]["len"] = float64(len(buf))
			var ent float64
			for _, c := range distinct {
				q := float64(c) / float64(len(buf))
				ent -= q * math.Log(q)
			}
			r[i]["uent"] = ent
			r[i]["meanTrim"] = 0
		}
		return r
	}
	ns := score(s.Validation)
	as := score(s.Attack)
	fmt.Printf("C=%d H=%d epochs=%d lr=%g T=%d seed=%d train %.1fs\n", *classes, *H, *epochs, *lr, *T, *seed, trainSec)
	for _, k := range []string{"mean", "win10", "win30", "win100", "top10pct"} {
		report(k, s, ns, as)
	}
	if *out != "" {
		type rec struct {
			Name, Family string
			S            map[string]float64
		}
		var rs []rec
		for i, t := range s.Validation {
			rs = append(rs, rec{t.Name, "", ns[i]})
		}
		for i, t := range s.Attack {
			rs = append(rs, rec{t.Name, t.Family, as[i]})
		}
		b, _ := json.Marshal(rs)
		os.WriteFile(*out, b, 0o644)
	}
}

func report(k string, s *eval.Split, ns, as []map[string]float64) {
	pick := func(x []map[string]float64) []float64 {
		o := make([]float64, len(x))
		for i := range x {
			o[i] = x[i][k]
		}
		return o
	}
	fmt.Println(exp.Line(k, s, pick(ns), pick(as)))
}
