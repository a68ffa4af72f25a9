// Command cover tries sequence covering (Marteau 2019) on ADFA-LD: a suffix
// automaton of the training traces gives, for each test call, the longest
// training substring ending there, and the greedy covering segment count.
package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/eval"
)

type sam struct {
	len  []int32
	link []int32
	next []map[int32]int32
	last int32
}

func newSAM() *sam {
	s := &sam{}
	s.add(0, -1)
	return s
}

func (s *sam) add(l, link int32) int32 {
	s.len = append(s.len, l)
	s.link = append(s.link, link)
	s.next = append(s.next, map[int32]int32{})
	return int32(len(s.len) - 1)
}

func (s *sam) extend(c int32) {
	cur := s.add(s.len[s.last]+1, 0)
	p := s.last
	for p != -1 {
		if _, ok := s.next[p][c]; ok {
			break
		}
		s.next[p][c] = cur
		p = s.link[p]
	}
	if p != -1 {
		q := s.next[p][c]
		if s.len[p]+1 == s.len[q] {
			s.link[cur] = q
		} else {
			cl := s.add(s.len[p]+1, s.link[q])
			for k, v := range s.next[q] {
				s.next[cl][k] = v
			}
			for p != -1 && s.next[p][c] == q {
				s.next[p][c] = cl
				p = s.link[p]
			}
			s.link[q] = cl
			s.link[cur] = cl
		}
	}
	s.last = cur
}

type vocab map[string]int32

func (v vocab) id(t string) int32 {
	if id, ok := v[t]; ok {
		return id
	}
	return -2 // unseen
}

func main() {
	s, err := eval.LoadADFA(adfaDir())
	if err != nil {
		panic(err)
	}
	voc := vocab{}
	a := newSAM()
	total := 0
	for _, t := range s.Train {
		for _, c := range t.Syscalls {
			if _, ok := voc[c]; !ok {
				voc[c] = int32(len(voc) + 1)
			}
			a.extend(voc[c])
			total++
		}
		a.extend(-1)
	}
	fmt.Println("states", len(a.len), "train calls", total)
	score := func(t eval.Trace) map[string]float64 {
		ids := make([]int32, len(t.Syscalls))
		for i, c := range t.Syscalls {
			ids[i] = voc.id(c)
		}
		n := float64(len(ids))
		// greedy covering
		segs := 0
		st := int32(0)
		for _, c := range ids {
			nx, ok := a.next[st][c]
			if !ok {
				segs++
				st = 0
				nx, ok = a.next[0][c]
				if !ok {
					st = 0
					continue
				}
			}
			st = nx
		}
		segs++
		// matching statistics
		st, l := int32(0), int32(0)
		var inv, logl, short4, short8, short16 float64
		for _, c := range ids {
			for st != -1 {
				if nx, ok := a.next[st][c]; ok {
					st = nx
					l++
					break
				}
				st = a.link[st]
				if st != -1 {
					l = a.len[st]
				}
			}
			if st == -1 {
				st, l = 0, 0
			}
			inv += 1 / float64(l+1)
			logl -= math.Log(float64(l + 1))
			if l < 4 {
				short4++
			}
			if l < 8 {
				short8++
			}
			if l < 16 {
				short16++
			}
		}
		return map[string]float64{
			"segs/n": float64(segs) / n, "segs": float64(segs), "inv": inv / n, "-logl": logl / n,
			"short4": short4 / n, "short8": short8 / n, "short16": short16 / n,
		}
	}
	var ns, as []map[string]float64
	for _, t := range s.Validation {
		ns = append(ns, score(t))
	}
	for _, t := range s.Attack {
		as = append(as, score(t))
	}
	keys := []string{}
	for k := range ns[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		report(k, s, ns, as)
	}
	pk := func(x []map[string]float64, k string) []float64 {
		o := []float64{}
		for _, m := range x {
			o = append(o, m[k])
		}
		return o
	}
	fmt.Println("normal", quant(pk(ns, "segs/n")))
	fmt.Println("attack", quant(pk(as, "segs/n")))
	fams := map[string][]map[string]float64{}
	for i, t := range s.Attack {
		fams[t.Family] = append(fams[t.Family], as[i])
	}
	for f, v := range fams {
		fmt.Println(f, quant(pk(v, "segs/n")))
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
	n, a := pick(ns), pick(as)
	d1, _ := eval.DetectionAt(n, a, 0.01)
	d5, _ := eval.DetectionAt(n, a, 0.05)
	line := fmt.Sprintf("%-9s AUC %.4f DR1 %.3f DR5 %.3f |", k, eval.AUC(n, a), d1, d5)
	fams := map[string][]float64{}
	for i, t := range s.Attack {
		fams[t.Family] = append(fams[t.Family], a[i])
	}
	names := []string{}
	for f := range fams {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		line += fmt.Sprintf(" %s %.3f", f, eval.AUC(n, fams[f]))
	}
	fmt.Println(line)
}

func adfaDir() string {
	shared := os.Getenv("BULKHEAD_SHARED")
	if shared == "" {
		shared = "/work/shared"
	}
	return filepath.Join(shared, "datasets", "adfa-ld")
}

func quant(x []float64) string {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	out := ""
	for _, q := range []float64{0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99} {
		out += fmt.Sprintf(" q%.0f=%.3f", q*100, y[int(q*float64(len(y)-1))])
	}
	return out
}
