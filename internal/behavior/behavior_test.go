package behavior

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func toks(s string) []string { return strings.Fields(s) }

func TestSeq(t *testing.T) {
	s := NewSeq(4, 1<<16)
	var h History
	s.Learn(&h, toks("open read read close open read read close"))
	score := func(in string) float64 {
		var h History
		x, _ := s.Score(&h, toks(in))
		return x
	}
	if got := score("open read read close open"); got != 0 {
		t.Errorf("learned sequence scores %v, want 0", got)
	}
	reordered := score("close read open read")
	novel, why := s.Score(&History{}, toks("execve execve execve execve"))
	if reordered <= 0 || reordered >= 1 {
		t.Errorf("known calls in a new order score %v, want strictly between 0 and 1", reordered)
	}
	if novel != 1 || len(why) != 1 || why[0] != "execve" {
		t.Errorf("unknown calls score %v explained by %v, want 1 and [execve]", novel, why)
	}
	// History carries context across batches: the split run scores as one.
	var h2 History
	a, _ := s.Score(&h2, toks("open read"))
	b, _ := s.Score(&h2, toks("read close"))
	if a != 0 || b != 0 {
		t.Errorf("learned run split across batches scores %v, %v; want 0, 0", a, b)
	}
}

func TestSeqMemoryBounded(t *testing.T) {
	s := NewSeq(8, 1<<12)
	before := len(s.Bits)
	var h History
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		s.Learn(&h, []string{fmt.Sprint(rng.IntN(300))})
	}
	if len(s.Bits) != before {
		t.Errorf("filter grew to %d words (from %d)", len(s.Bits), before)
	}
}

func TestExecAndNet(t *testing.T) {
	x := NewExec(100)
	x.Learn(&detector.ExecEvent{Binary: "/usr/sbin/nginx", ParentBinary: "/bin/sh", Arguments: "-g daemon off; -c /etc/nginx/nginx.conf"})
	for _, c := range []struct {
		e    detector.ExecEvent
		want float64
		why  string
	}{
		{detector.ExecEvent{Binary: "/usr/sbin/nginx", ParentBinary: "/bin/sh", Arguments: "-g daemon off; -c /etc/nginx/other.conf"}, 0, ""},
		{detector.ExecEvent{Binary: "/tmp/x", ParentBinary: "/usr/sbin/nginx"}, 1, "new binary /tmp/x"},
		{detector.ExecEvent{Binary: "/usr/sbin/nginx", ParentBinary: "/usr/sbin/nginx", Arguments: "-g daemon off; -c /etc/nginx/nginx.conf"}, 0.8, "new parent"},
		{detector.ExecEvent{Binary: "/usr/sbin/nginx", ParentBinary: "/bin/sh", Arguments: "-s reload"}, 0.5, "argument shape"},
	} {
		got, why := x.Score(&c.e)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%+v: %v %q, want %v containing %q", c.e, got, why, c.want, c.why)
		}
	}
	n := NewNet(100)
	n.Learn(&detector.ConnectEvent{Address: "10.0.0.5", Port: 5432, Protocol: "TCP"})
	for c, want := range map[detector.ConnectEvent]float64{
		{Address: "10.0.0.5", Port: 5432, Protocol: "tcp"}:    0,
		{Address: "10.0.0.9", Port: 5432, Protocol: "TCP"}:    0.7,
		{Address: "203.0.113.7", Port: 4444, Protocol: "TCP"}: 1,
	} {
		if got, _ := n.Score(&c); got != want {
			t.Errorf("%+v: %v, want %v", c, got, want)
		}
	}
}

func TestResource(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m := NewResource(512)
	sample := func(scale float64) *detector.ResourceSample {
		j := 1 + 0.2*rng.Float64()
		return &detector.ResourceSample{CPUMillicores: 100 * j * scale, MemoryBytes: 2e8 * j, NetworkRxBytes: 5e4 * j * scale, NetworkTxBytes: 5e4 * j * scale, DiskReadBytes: 1e3 * j, DiskWrittenBytes: 1e3 * j}
	}
	for i := 0; i < 300; i++ {
		m.Learn(sample(1), rng)
	}
	if s, _ := m.Score(sample(1), rng); s > 0.1 {
		t.Errorf("usual sample scores %v, want <= 0.1", s)
	}
	spike := sample(1)
	spike.CPUMillicores *= 100
	s, why := m.Score(spike, rng)
	if s < 0.8 || !strings.Contains(why, "cpu") {
		t.Errorf("100x cpu scores %v (%s), want >= 0.8 naming cpu", s, why)
	}
}

// TestHST: reference mass in two opposite corners; a point in an empty
// corner, inside every feature's range, must score far above the corners.
func TestHST(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var ref [][nFeat]float64
	for i := 0; i < 400; i++ {
		var v [nFeat]float64
		c := float64(i % 2 * 10)
		for f := range v {
			v[f] = c + rng.Float64()
		}
		ref = append(ref, v)
	}
	h := NewHST(ref, 25, 8, rng)
	var usual, odd [nFeat]float64
	for f := range odd {
		usual[f] = 10.5
		odd[f] = 10.5
		if f%2 == 0 {
			odd[f] = 0.5
		}
	}
	if u, o := h.Score(usual), h.Score(odd); u > 0.05 || o < u+0.2 {
		t.Errorf("HST scores a usual point %v and an empty-corner point %v, want <= 0.05 and 0.2 higher", u, o)
	}
}

// fakeResolver maps pod -> key.
type fakeResolver map[string]Key

func (f fakeResolver) Resolve(_ context.Context, ns, pod string) (Key, error) {
	k, ok := f[ns+"/"+pod]
	if !ok {
		return Key{}, fmt.Errorf("%w %s/%s", ErrUnknownPod, ns, pod)
	}
	if k.Owner == "" {
		return Key{}, fmt.Errorf("API unavailable")
	}
	return k, nil
}

// memStore keeps encoded baselines, as a real store would.
type memStore map[Key][]byte

func (m memStore) Load(_ context.Context, ns, owner string) ([]*Baseline, error) {
	var out []*Baseline
	for k, data := range m {
		if k.Namespace == ns && k.Owner == owner {
			b := &Baseline{}
			if err := b.UnmarshalBinary(data); err != nil {
				return nil, err
			}
			out = append(out, b)
		}
	}
	return out, nil
}

func (m memStore) Save(_ context.Context, b *Baseline) error {
	data, err := b.MarshalBinary()
	m[b.Key] = data
	return err
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func normalEvents(pod string) []detector.BehaviorEvent {
	return []detector.BehaviorEvent{
		{Namespace: "shop", Pod: pod, Container: "web", Syscalls: toks("accept read write close accept read write close")},
		{Namespace: "shop", Pod: pod, Container: "web", Exec: &detector.ExecEvent{Binary: "/usr/sbin/nginx", ParentBinary: "/bin/sh"}},
		{Namespace: "shop", Pod: pod, Container: "web", Connect: &detector.ConnectEvent{Address: "10.0.0.5", Port: 5432, Protocol: "TCP"}},
	}
}

func attackEvents(pod string) []detector.BehaviorEvent {
	return []detector.BehaviorEvent{
		{Namespace: "shop", Pod: pod, Container: "web", Syscalls: toks("accept read clone execve dup2 dup2 execve")},
		{Namespace: "shop", Pod: pod, Container: "web", Exec: &detector.ExecEvent{Binary: "/tmp/x", ParentBinary: "/usr/sbin/nginx"}},
	}
}

func TestObserverLifecycle(t *testing.T) {
	ctx := context.Background()
	v1 := Key{Namespace: "shop", Owner: "Deployment/web", TemplateHash: "aaa"}
	v2 := Key{Namespace: "shop", Owner: "Deployment/web", TemplateHash: "bbb"}
	res := fakeResolver{"shop/web-1": v1, "shop/web-2": v2}
	store := memStore{}
	clk := &clock{t: time.Unix(1e9, 0)}
	o := NewObserver(Config{LearningWindow: time.Hour}, res, store)
	o.now = clk.now

	// Learning a first revision: nothing to score against yet.
	for i := 0; i < 3; i++ {
		sigs, err := o.ObserveBehavior(ctx, normalEvents("web-1"))
		if err != nil || len(sigs) != 0 {
			t.Fatalf("while learning: %v signals, err %v; want none", len(sigs), err)
		}
	}
	clk.t = clk.t.Add(2 * time.Hour)
	sigs, err := o.ObserveBehavior(ctx, normalEvents("web-1"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 0 || sigs[0].Detector != detector.Behavior {
		t.Fatalf("normal behaviour after learning: %+v, err %v; want one behavior signal scoring 0", sigs, err)
	}
	sigs, err = o.ObserveBehavior(ctx, attackEvents("web-1"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 1 || !strings.Contains(sigs[0].Reason, "/tmp/x") {
		t.Fatalf("attack: %+v, err %v; want score 1 explained by /tmp/x", sigs, err)
	}
	var ev Evidence
	if err := json.Unmarshal(sigs[0].Evidence, &ev); err != nil || len(ev.Findings) != 2 || ev.Baseline != v1.String() {
		t.Fatalf("evidence %s (%v)", sigs[0].Evidence, err)
	}
	// Every notable behaviour is named in the reason, not only the worst:
	// a download and exec is a new binary and a new destination.
	sigs, err = o.ObserveBehavior(ctx, append(attackEvents("web-1"),
		detector.BehaviorEvent{Namespace: "shop", Pod: "web-1", Container: "web", Connect: &detector.ConnectEvent{Address: "203.0.113.9", Port: 4444, Protocol: "TCP"}}))
	if err != nil || len(sigs) != 1 || !strings.Contains(sigs[0].Reason, "/tmp/x") || !strings.Contains(sigs[0].Reason, "203.0.113.9") {
		t.Fatalf("download and exec: %+v, err %v; want the new binary and the new destination named", sigs, err)
	}

	// A rollout learns anew and is scored against the previous revision meanwhile.
	sigs, err = o.ObserveBehavior(ctx, attackEvents("web-2"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 1 {
		t.Fatalf("rollout under attack: %+v, err %v; want score 1 against the old baseline", sigs, err)
	}
	if err := json.Unmarshal(sigs[0].Evidence, &ev); err != nil || !ev.Learning || ev.Baseline != v1.String() {
		t.Fatalf("rollout evidence %s (%v): want learning, scored against %s", sigs[0].Evidence, err, v1)
	}

	// Restart: a new observer loads both baselines from the store.
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(store) != 2 {
		t.Fatalf("store holds %d baselines, want 2", len(store))
	}
	o2 := NewObserver(Config{LearningWindow: time.Hour}, res, store)
	o2.now = clk.now
	sigs, err = o2.ObserveBehavior(ctx, normalEvents("web-1"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 0 {
		t.Fatalf("after restart, normal: %+v, err %v; want score 0 from the stored baseline", sigs, err)
	}
	sigs, err = o2.ObserveBehavior(ctx, attackEvents("web-2"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 1 {
		t.Fatalf("after restart, rollout under attack: %+v, err %v; want 1 against the previous revision", sigs, err)
	}
	// A deleted pod's events are dropped; other pods in the batch still score.
	sigs, err = o2.ObserveBehavior(ctx, append(normalEvents("ghost"), attackEvents("web-1")...))
	if err != nil || len(sigs) != 1 || sigs[0].Pod != "web-1" {
		t.Fatalf("batch with a deleted pod: %+v, %v; want web-1 scored", sigs, err)
	}
	res["shop/broken"] = Key{}
	if _, err := o2.ObserveBehavior(ctx, normalEvents("broken")); err == nil {
		t.Error("resolver failure: want an error")
	}
}

func TestBaselineRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	b := NewBaseline(Key{Namespace: "a", Owner: "Deployment/b", TemplateHash: "c"}, Config{}, time.Unix(0, 0))
	var st Stream
	for _, ev := range normalEvents("p") {
		b.Learn(&ev, &st, rng)
	}
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var c Baseline
	if err := c.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	streams := func(string) *Stream { return &Stream{} }
	x := b.Score(attackEvents("p"), streams, rng)
	y := c.Score(attackEvents("p"), streams, rng)
	if fmt.Sprint(x) != fmt.Sprint(y) || c.Key != b.Key {
		t.Errorf("decoded baseline scores %v, original %v", y, x)
	}
	if len(data) > 900<<10 {
		t.Errorf("default baseline encodes to %d bytes; must fit a 1 MiB ConfigMap", len(data))
	}
}

func TestCalibration(t *testing.T) {
	b := NewBaseline(Key{}, Config{}, time.Unix(0, 0))
	rng := rand.New(rand.NewPCG(1, 1))
	var st Stream
	// Early batches are novel, later ones familiar: the ring keeps the latest.
	for i := 0; i < 400; i++ {
		b.Learn(&detector.BehaviorEvent{Syscalls: toks("open read write close open read write close")}, &st, rng)
	}
	if len(b.SysNormal) != recentBatches || b.SysNormal[0] != 0 {
		t.Fatalf("prequential ring: %d scores, first %v; want %d, all familiar", len(b.SysNormal), b.SysNormal[0], recentBatches)
	}
	prev := -1.0
	for raw := 0.0; raw <= 1; raw += 0.01 {
		c := b.calibrate(raw)
		if c <= prev || c < 0 || c > 1 {
			t.Fatalf("calibrate(%v) = %v after %v: want strictly increasing in [0,1]", raw, c, prev)
		}
		prev = c
	}
	// A quiet workload: a tenth of calls off the learned sequences is already alarming.
	if c := b.calibrate(0.1); c < 0.5 {
		t.Errorf("calibrate(0.1) = %v on a perfectly regular workload, want >= 0.5", c)
	}
}

// Baselines of workloads that went quiet (deleted, scaled away) leave memory
// once they are stored; the next event loads them again, unchanged.
func TestObserverEvictsIdle(t *testing.T) {
	ctx := context.Background()
	v1 := Key{Namespace: "shop", Owner: "Deployment/web", TemplateHash: "aaa"}
	store := memStore{}
	clk := &clock{t: time.Unix(1e9, 0)}
	o := NewObserver(Config{LearningWindow: time.Hour}, fakeResolver{"shop/web-1": v1}, store)
	o.now = clk.now
	if _, err := o.ObserveBehavior(ctx, normalEvents("web-1")); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(2 * time.Hour)
	// Idle but not yet saved: kept, then saved.
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(o.workloads) != 1 || len(store) != 1 {
		t.Fatalf("after the first flush: %d workloads in memory, %d stored; want 1 and 1", len(o.workloads), len(store))
	}
	// Idle and saved: dropped, with its streams.
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(o.workloads) != 0 || len(o.streams) != 0 {
		t.Fatalf("idle workload kept: %d workloads, %d streams in memory", len(o.workloads), len(o.streams))
	}
	// Its next event scores against the stored baseline.
	sigs, err := o.ObserveBehavior(ctx, attackEvents("web-1"))
	if err != nil || len(sigs) != 1 || sigs[0].Score != 1 {
		t.Fatalf("after eviction: %+v, err %v; want the attack scored 1 against the reloaded baseline", sigs, err)
	}
	// A workload with recent events stays.
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(o.workloads) != 1 {
		t.Fatalf("active workload evicted")
	}
}
