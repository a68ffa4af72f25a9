package behavior

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// syntheticTrace is a loop-heavy call stream over a 100-call vocabulary,
// roughly like a server's (the ADFA-LD numbers are in internal/eval).
func syntheticTrace(rng *rand.Rand, n int) []string {
	out := make([]string, n)
	loop := []int{3, 4, 5, 6, 192, 195, 197, 240, 265, 168}
	for i := range out {
		if rng.IntN(10) == 0 {
			out[i] = fmt.Sprint(rng.IntN(100))
		} else {
			out[i] = fmt.Sprint(loop[i%len(loop)])
		}
	}
	return out
}

func trainedBaseline(testing.TB) *Baseline {
	rng := rand.New(rand.NewPCG(1, 2))
	bl := NewBaseline(Key{Namespace: "n", Owner: "Deployment/d", TemplateHash: "h"}, Config{}, time.Unix(0, 0))
	var st Stream
	bl.Learn(&detector.BehaviorEvent{Syscalls: syntheticTrace(rng, 300000)}, &st, rng)
	for i := 0; i < 200; i++ {
		bl.Learn(&detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: fmt.Sprintf("/bin/b%d", i%20), ParentBinary: "/bin/sh", Arguments: "-c x"}}, &st, rng)
		bl.Learn(&detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: fmt.Sprintf("10.0.0.%d", i%50), Port: 443, Protocol: "TCP"}}, &st, rng)
		bl.Learn(&detector.BehaviorEvent{Metrics: &detector.ResourceSample{CPUMillicores: 100 + float64(i%7), MemoryBytes: 1e8, NetworkRxBytes: 1e4}}, &st, rng)
	}
	return bl
}

// BenchmarkSyscallEvent is the cost of scoring one system call.
func BenchmarkSyscallEvent(b *testing.B) {
	bl := trainedBaseline(b)
	toks := syntheticTrace(rand.New(rand.NewPCG(9, 9)), 1<<16)
	var h History
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.Syscalls.Event(&h, toks[i&(1<<16-1)])
	}
}

// BenchmarkSyscallBatch scores 1000-call batches through Baseline.Score,
// reported per call.
func BenchmarkSyscallBatch(b *testing.B) {
	bl := trainedBaseline(b)
	rng := rand.New(rand.NewPCG(9, 9))
	evs := []detector.BehaviorEvent{{Syscalls: syntheticTrace(rng, 1000)}}
	var st Stream
	streams := func(string) *Stream { return &st }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.Score(evs, streams, rng)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/syscall")
}

func benchOne(b *testing.B, ev detector.BehaviorEvent) {
	bl := trainedBaseline(b)
	rng := rand.New(rand.NewPCG(9, 9))
	evs := []detector.BehaviorEvent{ev}
	var st Stream
	streams := func(string) *Stream { return &st }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.Score(evs, streams, rng)
	}
}

func BenchmarkExecEvent(b *testing.B) {
	benchOne(b, detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: "/bin/b3", ParentBinary: "/bin/sh", Arguments: "-c x"}})
}

func BenchmarkConnectEvent(b *testing.B) {
	benchOne(b, detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: "10.0.0.7", Port: 443, Protocol: "TCP"}})
}

func BenchmarkResourceEvent(b *testing.B) {
	benchOne(b, detector.BehaviorEvent{Metrics: &detector.ResourceSample{CPUMillicores: 104, MemoryBytes: 1e8, NetworkRxBytes: 1e4}})
}

// BenchmarkObserve is the manager's path: resolve, learn or score, evidence.
func BenchmarkObserve(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 9))
	o := NewObserver(Config{LearningWindow: time.Nanosecond}, fakeResolver{"ns/p": {Namespace: "ns", Owner: "Deployment/d", TemplateHash: "h"}}, nil)
	o.workloads["ns/Deployment/d"] = &workload{cur: trainedBaseline(b), dirty: map[*Baseline]bool{}}
	evs := []detector.BehaviorEvent{{Namespace: "ns", Pod: "p", Container: "c", Syscalls: syntheticTrace(rng, 1000)}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := o.ObserveBehavior(ctx, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/syscall")
}

// BenchmarkBaselineMemory reports the encoded size of a trained default
// baseline (what the store keeps), its n-gram filters and the heap it holds
// once scoring has fitted the resource model.
func BenchmarkBaselineMemory(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	bl := trainedBaseline(b)
	bl.Score([]detector.BehaviorEvent{{Metrics: &detector.ResourceSample{CPUMillicores: 1}}}, func(string) *Stream { return &Stream{} }, rand.New(rand.NewPCG(1, 1)))
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc), "heap-bytes")
	var n int
	for i := 0; i < b.N; i++ {
		data, err := bl.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		n = len(data)
	}
	b.ReportMetric(float64(n), "encoded-bytes")
	b.ReportMetric(float64(8*len(bl.Syscalls.Bits)+8*len(bl.ExecSeq.Bits)), "filter-bytes")
	runtime.KeepAlive(bl)
}
