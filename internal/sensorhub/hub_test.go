package sensorhub

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

type pods map[string]string // ns/pod -> node

func (p pods) lookup(_ context.Context, ns, pod string) (string, bool, error) {
	if ns == "broken" {
		return "", false, errors.New("cache down")
	}
	n, ok := p[ns+"/"+pod]
	return n, ok, nil
}

func report(node string, scores ...wire.Score) wire.Report {
	return wire.Report{Node: node, Time: time.Now(), Heartbeat: true, Coverage: wire.Coverage{Ready: true}, Scores: scores}
}

func score(ns, pod string, v float64) wire.Score {
	return wire.Score{Namespace: ns, Pod: pod, Score: v, Reason: "r", ID: "1", Time: time.Now()}
}

// A sensor speaks only for its own node, only about pods placed there, and
// one bad item refuses the whole report.
func TestAcceptHoldsSensorToItsNode(t *testing.T) {
	p := pods{"web/a": "n1", "web/b": "n2"}
	for _, tc := range []struct {
		name   string
		id     Identity
		r      wire.Report
		status int
	}{
		{"own node, own pod", Identity{Node: "n1"}, report("n1", score("web", "a", 0.9)), 0},
		{"unbound token", Identity{}, report("n1", score("web", "a", 0.9)), http.StatusForbidden},
		{"claims another node", Identity{Node: "n1"}, report("n2", score("web", "b", 0.9)), http.StatusForbidden},
		{"pod of another node", Identity{Node: "n1"}, report("n1", score("web", "a", 0.1), score("web", "b", 0.9)), http.StatusForbidden},
		{"unknown pod", Identity{Node: "n1"}, report("n1", score("web", "zz", 0.9)), http.StatusUnprocessableEntity},
		{"cache down", Identity{Node: "n1"}, report("n1", score("broken", "a", 0.9)), http.StatusServiceUnavailable},
		{"enforcement of another node's pod", Identity{Node: "n1"}, wire.Report{Node: "n1", Time: time.Now(),
			Enforcement: []wire.Enforcement{{Namespace: "web", Pod: "b", Quarantine: "b", Enforced: true}}}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHub(p.lookup)
			sigs, rej := h.Accept(context.Background(), tc.id, tc.r)
			if tc.status == 0 {
				if rej != nil {
					t.Fatalf("refused: %v", rej)
				}
				if len(sigs) != 1 || sigs[0].Detector != detector.Behavior || sigs[0].Score != 0.9 || sigs[0].ID != "sensor/n1/1" {
					t.Fatalf("signals %+v", sigs)
				}
				return
			}
			if rej == nil || rej.Status != tc.status {
				t.Fatalf("rejection %v, want status %d", rej, tc.status)
			}
			if len(sigs) != 0 || len(h.Nodes()) != 0 {
				t.Fatal("a refused report changed state")
			}
		})
	}
}

func TestHeartbeatsAndEnforcement(t *testing.T) {
	p := pods{"web/a": "n1", "web/c": "n1", "web/b": "n2"}
	h := NewHub(p.lookup)
	clock := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return clock }
	ctx := context.Background()
	r1 := wire.Report{Node: "n1", Time: clock, Heartbeat: true, Coverage: wire.Coverage{Ready: true},
		Enforcement: []wire.Enforcement{{Namespace: "web", Pod: "a", Quarantine: "a", Enforced: true, ConnCut: true}}}
	if _, rej := h.Accept(ctx, Identity{Node: "n1"}, r1); rej != nil {
		t.Fatal(rej)
	}
	r2 := wire.Report{Node: "n2", Time: clock, Heartbeat: true, Coverage: wire.Coverage{Ready: false, Missing: "BTF"}}
	if _, rej := h.Accept(ctx, Identity{Node: "n2"}, r2); rej != nil {
		t.Fatal(rej)
	}
	if e, ok := h.Enforcement("web", "a"); !ok || !e.ConnCut || e.Node != "n1" {
		t.Fatalf("enforcement %+v %v", e, ok)
	}
	un := h.Uncovered(time.Minute)
	if len(un) != 1 || un[0].Node != "n2" || un[0].Missing != "BTF" {
		t.Fatalf("uncovered %+v", un)
	}
	// n1 goes silent; its next report no longer lists pod a (released).
	clock = clock.Add(2 * time.Minute)
	if un := h.Uncovered(time.Minute); len(un) != 2 {
		t.Fatalf("silent node not uncovered: %+v", un)
	}
	if _, rej := h.Accept(ctx, Identity{Node: "n1"}, wire.Report{Node: "n1", Time: clock, Heartbeat: true, Coverage: wire.Coverage{Ready: true}}); rej != nil {
		t.Fatal(rej)
	}
	if _, ok := h.Enforcement("web", "a"); ok {
		t.Fatal("released pod still reported as enforced")
	}
}

// The Quarantine is woken when its pod's kernel state changes, not on every
// heartbeat, and only the Quarantine named in the report gets the state.
func TestKernelEnforcementChanges(t *testing.T) {
	p := pods{"web/a": "n1"}
	h := NewHub(p.lookup)
	ctx := context.Background()
	rep := func(enf ...wire.Enforcement) wire.Report {
		return wire.Report{Node: "n1", Time: time.Now(), Heartbeat: true, Coverage: wire.Coverage{Ready: true}, Enforcement: enf}
	}
	e := wire.Enforcement{Namespace: "web", Pod: "a", Quarantine: "qa", Enforced: true, ConnCut: true, SocketsDestroyed: 2, Method: "bpf_sock_destroy"}
	drain := func() (names []string) {
		for {
			select {
			case ev := <-h.Changes():
				names = append(names, ev.Object.GetNamespace()+"/"+ev.Object.GetName())
			default:
				return names
			}
		}
	}
	if _, rej := h.Accept(ctx, Identity{Node: "n1"}, rep(e)); rej != nil {
		t.Fatal(rej)
	}
	if got := drain(); len(got) != 1 || got[0] != "web/qa" {
		t.Fatalf("first report woke %v", got)
	}
	k, ok := h.KernelEnforcement("web", "a", "qa")
	if !ok || !k.Enforced || !k.ConnectionsCut || k.SocketsDestroyed != 2 || k.Node != "n1" {
		t.Fatalf("kernel %+v %v", k, ok)
	}
	if _, ok := h.KernelEnforcement("web", "a", "other"); ok {
		t.Fatal("state given to another Quarantine")
	}
	if _, rej := h.Accept(ctx, Identity{Node: "n1"}, rep(e)); rej != nil {
		t.Fatal(rej)
	}
	if got := drain(); len(got) != 0 {
		t.Fatalf("unchanged heartbeat woke %v", got)
	}
	if _, rej := h.Accept(ctx, Identity{Node: "n1"}, rep()); rej != nil {
		t.Fatal(rej)
	}
	if got := drain(); len(got) != 1 || got[0] != "web/qa" {
		t.Fatalf("release woke %v", got)
	}
}
