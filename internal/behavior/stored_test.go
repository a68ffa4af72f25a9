package behavior

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func roundTrip(t testing.TB, b *Baseline) (*Baseline, int) {
	t.Helper()
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > MaxStoredBytes {
		t.Fatalf("baseline %s stored in %d bytes, over the %d cap", b.Key, len(data), MaxStoredBytes)
	}
	c := &Baseline{}
	if err := c.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	return c, len(data)
}

// TestStoredBaselineSize learns the benchmarks' server-like workload (300k
// system calls, 10% of them random, 20 binaries, 50 destinations, resource
// samples) and a hostile one that fills every set to its cap with long
// random strings: both store within MaxStoredBytes.
func TestStoredBaselineSize(t *testing.T) {
	realistic := trainedBaseline(nil)
	_, n := roundTrip(t, realistic)
	t.Logf("realistic workload: %d bytes stored (filter %d bytes in memory)", n, 8*len(realistic.Syscalls.Bits))

	hostile := fullBaseline(t, 1)
	c, n := roundTrip(t, hostile)
	t.Logf("hostile workload: %d bytes stored; syscall filter %d bits, sets keep %d hash bits of %d items, %d resource samples",
		n, 64*len(c.Syscalls.Bits), 64-int(c.Exec.Binaries.Drop), len(c.Exec.Binaries.Items), len(c.Res.Samples))
}

// fullBaseline learns a workload with more than a stored baseline can hold.
func fullBaseline(t testing.TB, seed uint64) *Baseline {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := NewBaseline(Key{Namespace: "n", Owner: "Deployment/d", TemplateHash: "h"}, Config{}, time.Unix(0, 0))
	var st Stream
	calls := make([]string, 40000)
	for i := range calls {
		calls[i] = fmt.Sprint(rng.IntN(300))
	}
	b.Learn(&detector.BehaviorEvent{Syscalls: calls}, &st, rng)
	for i := 0; i < 2500; i++ {
		r := rng.Uint64()
		b.Learn(&detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: fmt.Sprintf("/opt/app/bin/tool-%x", r), ParentBinary: fmt.Sprintf("/opt/app/bin/parent-%x", r>>8), Arguments: fmt.Sprintf("-%x %d", r, i)}}, &st, rng)
		b.Learn(&detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), Port: int32(1024 + i), Protocol: "TCP"}}, &st, rng)
		b.Learn(&detector.BehaviorEvent{Metrics: &detector.ResourceSample{CPUMillicores: 100 * rng.Float64(), MemoryBytes: 1e8 * rng.Float64(), DiskReadBytes: 1e5 * rng.Float64()}}, &st, rng)
	}
	return b
}

// TestShrinkNeverRaisesAlarms: a baseline shrunk to its stored size scores
// every event at most as high as the full one (it can only miss novelty).
func TestShrinkNeverRaisesAlarms(t *testing.T) {
	full := fullBaseline(t, 2)
	small, _ := roundTrip(t, full)
	if len(small.Syscalls.Bits) >= len(full.Syscalls.Bits) || small.Exec.Binaries.Drop == 0 {
		t.Fatalf("the hostile baseline was not shrunk (filter %d words, set drop %d): the test shows nothing", len(small.Syscalls.Bits), small.Exec.Binaries.Drop)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var evs []detector.BehaviorEvent
	for i := 0; i < 300; i++ {
		calls := make([]string, 50)
		for j := range calls {
			calls[j] = fmt.Sprint(rng.IntN(320)) // mostly known calls, some never seen
		}
		evs = append(evs,
			detector.BehaviorEvent{Syscalls: calls},
			detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: fmt.Sprintf("/tmp/x%d", i), ParentBinary: "/bin/sh"}},
			detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: "192.0.2.1", Port: int32(i), Protocol: "UDP"}})
	}
	streams := func(string) *Stream { return &Stream{} }
	for i := range evs {
		a := full.Score(evs[i:i+1], streams, rng)
		b := small.Score(evs[i:i+1], streams, rng)
		if len(a) != len(b) {
			t.Fatalf("event %d: %d findings full, %d stored", i, len(a), len(b))
		}
		for j := range a {
			if b[j].Raw > a[j].Raw || (a[j].Component != CompSyscalls && b[j].Score > a[j].Score) {
				t.Fatalf("event %d: stored baseline scores %s %v (raw %v), full one %v (raw %v)", i, b[j].Component, b[j].Score, b[j].Raw, a[j].Score, a[j].Raw)
			}
		}
	}
}

// TestRoundTripExact: a baseline that fits is stored without loss: the
// filters and sets come back bit for bit.
func TestRoundTripExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	b := NewBaseline(Key{Namespace: "a", Owner: "Deployment/b", TemplateHash: "c"}, Config{}, time.Unix(5, 0))
	var st Stream
	for i := 0; i < 50; i++ {
		for _, ev := range normalEvents("p") {
			b.Learn(&ev, &st, rng)
		}
		b.Learn(&detector.BehaviorEvent{Metrics: &detector.ResourceSample{CPUMillicores: float64(100 + i)}}, &st, rng)
	}
	c, _ := roundTrip(t, b)
	if !slices.Equal(c.Syscalls.Bits, b.Syscalls.Bits) || !slices.Equal(c.ExecSeq.Bits, b.ExecSeq.Bits) {
		t.Error("filters changed in a round trip that fits")
	}
	if !c.Exec.Binaries.Has("/usr/sbin/nginx") || c.Exec.Binaries.Has("/tmp/x") || !c.Net.Dests.Has("10.0.0.5:TCP/5432") {
		t.Error("sets changed in a round trip that fits")
	}
	if c.Key != b.Key || !c.Started.Equal(b.Started) || c.Window != b.Window || c.Events != b.Events || len(c.Res.Samples) != len(b.Res.Samples) || c.Res.Seen != b.Res.Seen {
		t.Errorf("round trip: %+v, want %+v", c, b)
	}
}

func TestUnmarshalRejectsBadInput(t *testing.T) {
	good, err := trainedBaseline(nil).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	keep := NewBaseline(Key{Namespace: "keep"}, Config{}, time.Unix(0, 0))
	for name, data := range map[string][]byte{
		"empty":      nil,
		"old gzip":   {0x1f, 0x8b, 8, 0},
		"truncated":  good[:len(good)/2],
		"magic only": []byte(storedMagic),
		"garbage":    append([]byte(storedMagic), bytes.Repeat([]byte{0xff}, 100)...),
	} {
		if err := keep.UnmarshalBinary(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if keep.Key.Namespace != "keep" {
			t.Fatalf("%s: a failed decode changed the baseline", name)
		}
	}
}

func FuzzUnmarshalBaseline(f *testing.F) {
	small := NewBaseline(Key{Namespace: "a", Owner: "Pod/b"}, Config{SeqBits: 1 << 10, SetCap: 4}, time.Unix(0, 0))
	var st Stream
	rng := rand.New(rand.NewPCG(1, 1))
	for _, ev := range normalEvents("p") {
		small.Learn(&ev, &st, rng)
	}
	data, err := small.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(storedMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Baseline
		if err := b.UnmarshalBinary(data); err != nil {
			return
		}
		// Whatever decodes can be scored, merged and stored again.
		b.Score(attackEvents("p"), func(string) *Stream { return &Stream{} }, rand.New(rand.NewPCG(1, 1)))
		c := b
		_ = c.Merge(&b)
		if _, err := b.MarshalBinary(); err != nil {
			t.Fatalf("re-encoding a decoded baseline: %v", err)
		}
	})
}

func TestGolombRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, ubits := range []uint{1, 7, 20, 40, 64} {
		for _, n := range []int{0, 1, 2, 100, 1000} {
			set := map[uint64]bool{}
			for len(set) < n && len(set) < 1<<min(ubits, 20)/2+1 {
				v := rng.Uint64()
				if ubits < 64 {
					v &= 1<<ubits - 1
				}
				set[v] = true
			}
			vals := make([]uint64, 0, len(set))
			for v := range set {
				vals = append(vals, v)
			}
			slices.Sort(vals)
			got, err := getSorted(putSorted(vals, ubits), ubits, 1<<20)
			if err != nil || !slices.Equal(got, vals) && len(vals) > 0 {
				t.Fatalf("ubits %d, %d values: got %d values, %v", ubits, len(vals), len(got), err)
			}
		}
	}
}

// TestMerge: two nodes learn different halves of a workload; the merged
// baseline knows both, still flags what neither saw, and merging is
// symmetric in what it knows.
func TestMerge(t *testing.T) {
	key := Key{Namespace: "shop", Owner: "Deployment/web", TemplateHash: "h"}
	rng := rand.New(rand.NewPCG(1, 1))
	learn := func(start int64, calls string, bin, addr string, cpu float64) *Baseline {
		b := NewBaseline(key, Config{}, time.Unix(start, 0))
		var st Stream
		for i := 0; i < 40; i++ {
			b.Learn(&detector.BehaviorEvent{Syscalls: toks(calls)}, &st, rng)
			b.Learn(&detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: bin, ParentBinary: "/bin/sh"}}, &st, rng)
			b.Learn(&detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: addr, Port: 443, Protocol: "TCP"}}, &st, rng)
			b.Learn(&detector.BehaviorEvent{Metrics: &detector.ResourceSample{CPUMillicores: cpu + float64(i%3)}}, &st, rng)
		}
		return b
	}
	a := learn(100, "accept read write close", "/usr/bin/a", "10.0.0.1", 100)
	b := learn(50, "epoll_wait recvfrom sendto", "/usr/bin/b", "10.0.0.2", 3000)
	// Node b's copy went through the store (folded filters, hashed sets).
	b, _ = roundTrip(t, b)
	m, _ := roundTrip(t, a) // a merged copy; a itself stays for comparison
	if err := m.Merge(b); err != nil {
		t.Fatal(err)
	}
	streams := func(string) *Stream { return &Stream{} }
	score := func(bl *Baseline, ev detector.BehaviorEvent) float64 {
		f := bl.Score([]detector.BehaviorEvent{ev}, streams, rng)[0]
		if f.Component == CompSyscalls {
			return f.Raw
		}
		return f.Score
	}
	for _, ev := range []detector.BehaviorEvent{
		{Syscalls: toks("accept read write close")},
		{Syscalls: toks("epoll_wait recvfrom sendto")},
		{Exec: &detector.ExecEvent{Binary: "/usr/bin/b", ParentBinary: "/bin/sh"}},
		{Connect: &detector.ConnectEvent{Address: "10.0.0.1", Port: 443, Protocol: "TCP"}},
		{Connect: &detector.ConnectEvent{Address: "10.0.0.2", Port: 443, Protocol: "TCP"}},
		{Metrics: &detector.ResourceSample{CPUMillicores: 101}},
		{Metrics: &detector.ResourceSample{CPUMillicores: 3001}},
	} {
		if s := score(m, ev); s != 0 {
			t.Errorf("merged baseline scores %+v at %v, want 0 (one node learned it)", ev, s)
		}
	}
	if s := score(a, detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: "/usr/bin/b", ParentBinary: "/bin/sh"}}); s == 0 {
		t.Error("node a alone knows node b's binary: the merge test shows nothing")
	}
	for _, ev := range []detector.BehaviorEvent{
		{Syscalls: toks("execve execve")},
		{Exec: &detector.ExecEvent{Binary: "/tmp/x", ParentBinary: "/usr/bin/a"}},
		{Connect: &detector.ConnectEvent{Address: "203.0.113.9", Port: 4444, Protocol: "TCP"}},
	} {
		if s := score(m, ev); s < 0.99 {
			t.Errorf("merged baseline scores novel %+v at %v, want 1", ev, s)
		}
	}
	if !m.Started.Equal(time.Unix(50, 0)) || m.Events != a.Events+b.Events || m.Res.Seen != 80 || len(m.SysNormal) != 80 {
		t.Errorf("merged window/counts: started %v, events %d, resource seen %d, calibration %d", m.Started, m.Events, m.Res.Seen, len(m.SysNormal))
	}
	// The other order knows the same n-grams.
	m2 := b
	a2, _ := roundTrip(t, a)
	if err := m2.Merge(a2); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Syscalls.Bits, m2.Syscalls.Bits) || len(m.Exec.Binaries.Items) != len(m2.Exec.Binaries.Items) {
		t.Error("merge is not symmetric in what it learned")
	}
	// Another workload is refused and changes nothing.
	other := NewBaseline(Key{Namespace: "shop", Owner: "Deployment/other", TemplateHash: "h"}, Config{}, time.Unix(0, 0))
	before, _ := m.MarshalBinary()
	if err := m.Merge(other); err == nil {
		t.Error("merging another workload's baseline succeeded")
	}
	if err := m.Merge(&Baseline{Key: key}); err == nil {
		t.Error("merging an empty baseline succeeded")
	}
	if after, _ := m.MarshalBinary(); !bytes.Equal(before, after) {
		t.Error("a refused merge changed the baseline")
	}
}

// TestMergeResourceBounded: merged reservoirs stay within the cap and keep
// both sides' extremes.
func TestMergeResourceBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	a, b := NewResource(64), NewResource(64)
	for i := 0; i < 1000; i++ {
		a.Learn(&detector.ResourceSample{CPUMillicores: 10 + float64(i%50)}, rng)
		b.Learn(&detector.ResourceSample{CPUMillicores: 5000 + float64(i%50)}, rng)
	}
	a.merge(b)
	if len(a.Samples) != 64 || a.Seen != 2000 {
		t.Fatalf("merged reservoir: %d samples, seen %d; want 64, 2000", len(a.Samples), a.Seen)
	}
	var lo, hi bool
	for _, s := range a.Samples {
		lo = lo || s[0] < 4
		hi = hi || s[0] > 8
	}
	if !lo || !hi {
		t.Error("merged reservoir lost one side")
	}
}

// FuzzGetSorted feeds the Rice decoder directly (inside a stored baseline
// it sits behind flate and gob, where the fuzzer rarely reaches it).
func FuzzGetSorted(f *testing.F) {
	f.Add(putSorted([]uint64{1, 5, 9, 1000}, 12), uint8(12))
	f.Add(putSorted([]uint64{0, 1 << 40}, 64), uint8(64))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0}, uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, ub uint8) {
		ubits := uint(ub%64) + 1
		vals, err := getSorted(data, ubits, 1<<16)
		if err != nil {
			return
		}
		for i := 1; i < len(vals); i++ {
			if vals[i] <= vals[i-1] {
				t.Fatalf("decoded values not increasing: %v", vals)
			}
		}
		again, err := getSorted(putSorted(vals, ubits), ubits, 1<<16)
		if err != nil || !slices.Equal(again, vals) {
			t.Fatalf("re-encoding %v: %v, %v", vals, again, err)
		}
	})
}
