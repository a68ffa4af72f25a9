package detection

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Issue 14 item 7: a score's evidence was stored whole (up to the 1 MiB
// body), for up to maxPods × 32 scores.
func TestStoredEvidenceIsBounded(t *testing.T) {
	s := NewStore(time.Minute, 10)
	big := json.RawMessage(`{"args":"` + strings.Repeat("x", 1<<20) + `"}`)
	small := json.RawMessage(`{"rule":"shell"}`)
	s.Put([]detector.Signal{
		{Namespace: "web", Pod: "a", Detector: "big", Score: 1, Evidence: big, Reason: strings.Repeat("r", 10_000)},
		{Namespace: "web", Pod: "a", Detector: "small", Score: 1, Evidence: small},
	})
	fresh := s.Fresh(PodKey{Namespace: "web", Pod: "a"})
	b := fresh["big"]
	if len(b.Evidence) > MaxEvidenceBytes || len(b.Reason) > MaxReasonBytes {
		t.Fatalf("stored %d bytes of evidence and %d of reason", len(b.Evidence), len(b.Reason))
	}
	if !json.Valid(b.Evidence) || !strings.Contains(string(b.Evidence), fmt.Sprint(len(big))) {
		t.Errorf("oversized evidence kept as %s, want valid JSON naming its size", b.Evidence)
	}
	if string(fresh["small"].Evidence) != string(small) {
		t.Errorf("small evidence changed: %s", fresh["small"].Evidence)
	}
}

// Issue 14 item 7: bulkhead_score's detector label took any name a client
// chose; only registered detectors get their own label now.
func TestMetricLabelsOnlyForRegisteredDetectors(t *testing.T) {
	reg := NewRegistry()
	e := fakeEvaluator(t, nil, shop()...)
	e.Registry = reg
	p := &Pipeline{Registry: reg, Recorder: e}
	// Fill the registry, then post under a name it can no longer learn.
	for i := 0; len(reg.Names()) < MaxDetectors; i++ {
		_ = reg.Learn(fmt.Sprintf("model-%d", i))
	}
	before := testutil.CollectAndCount(metrics.Scores)
	for i := range 50 {
		b := Batch{Items: []Item{{Detector: "x", Signal: &detector.Signal{Namespace: "web", Pod: "shop-1", Detector: fmt.Sprintf("unregistered-%d", i), Score: 0.5}}}}
		if _, _, err := p.Accept(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	// One new series at most (the shared "_other" label), not 50.
	if got := testutil.CollectAndCount(metrics.Scores) - before; got > 1 {
		t.Errorf("%d new bulkhead_score series for 50 unregistered names", got)
	}
	if testutil.ToFloat64(metrics.DetectorLastSignal.WithLabelValues(OtherDetectors)) == 0 {
		t.Error("unregistered detectors were not counted under " + OtherDetectors)
	}
	// A registered one keeps its name.
	if _, _, err := p.Accept(context.Background(), Batch{Items: []Item{{Detector: "model-1", Signal: &detector.Signal{Namespace: "web", Pod: "shop-1", Detector: "model-1", Score: 0.5}}}}); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(metrics.DetectorLastSignal.WithLabelValues("model-1")) == 0 {
		t.Error("a registered detector lost its label")
	}
}
