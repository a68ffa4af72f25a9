package main

import (
	"github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models/exp"
	"github.com/bulkhead-dev/bulkhead/internal/eval"
	"math/rand/v2"
	"syscall"
	"testing"
)

func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func benchData(b *testing.B) (*eval.Split, vocab, int) {
	s, err := eval.LoadADFA(exp.Dir())
	if err != nil {
		b.Fatal(err)
	}
	voc := vocab{}
	for _, t := range s.Train {
		for _, c := range t.Syscalls {
			if _, ok := voc[c]; !ok {
				voc[c] = len(voc) + 2
			}
		}
	}
	return s, voc, len(voc) + 2
}

func benchGRU(b *testing.B, H, C int) {
	s, voc, V := benchData(b)
	rng := rand.New(rand.NewPCG(1, 1))
	g := NewGRU(V, H, rng)
	if C > 0 {
		f := make([]float64, V)
		for i := range f {
			f[i] = float64(V - i)
		}
		g.SetClasses(C, f, rng)
	}
	seqs := [][]int{}
	n := 0
	for _, t := range s.Validation[:300] {
		seqs = append(seqs, voc.ids(t.Syscalls))
		n += len(t.Syscalls)
	}
	var buf []float64
	b.ResetTimer()
	c0 := cpuNs()
	for i := 0; i < b.N; i++ {
		for _, q := range seqs {
			buf = g.NLL(q, buf)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/syscall")
	b.ReportMetric(float64(cpuNs()-c0)/float64(b.N*n), "cpu-ns/syscall")
}

func BenchmarkGRU32Full(b *testing.B) { benchGRU(b, 32, 0) }
func BenchmarkGRU32C12(b *testing.B)  { benchGRU(b, 32, 12) }
func BenchmarkGRU24C12(b *testing.B)  { benchGRU(b, 24, 12) }
func BenchmarkGRU64Full(b *testing.B) { benchGRU(b, 64, 0) }

func BenchmarkWB6(b *testing.B) {
	s, voc, V := benchData(b)
	m := newWB(6)
	for _, t := range s.Train {
		ids := voc.ids(t.Syscalls)
		for i := 0; i+1 < len(ids); i++ {
			m.add(ids[max(0, i+1-6):i+1], ids[i+1])
		}
	}
	n := 0
	var seqs [][]int
	for _, t := range s.Validation[:300] {
		seqs = append(seqs, voc.ids(t.Syscalls))
		n += len(t.Syscalls)
	}
	b.ResetTimer()
	c0 := cpuNs()
	var sink float64
	for i := 0; i < b.N; i++ {
		for _, ids := range seqs {
			for j := 0; j+1 < len(ids); j++ {
				sink += m.prob(ids[max(0, j+1-6):j+1], ids[j+1], 1/float64(V))
			}
		}
	}
	_ = sink
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/syscall")
	b.ReportMetric(float64(cpuNs()-c0)/float64(b.N*n), "cpu-ns/syscall")
}
