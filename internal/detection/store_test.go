package detection

import (
	"fmt"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func TestStoreFreshnessBoundsAndForget(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := NewStore(5*time.Minute, 2)
	s.now = func() time.Time { return now }
	a, b, c := PodKey{"ns", "a"}, PodKey{"ns", "b"}, PodKey{"ns", "c"}

	s.Put([]detector.Signal{
		{Namespace: "ns", Pod: "a", Detector: detector.Falco, Score: 0.7, Time: now.Add(-6 * time.Minute)},
		{Namespace: "ns", Pod: "a", Detector: "ext", Score: 0.4, Time: now.Add(-time.Minute)},
		{Namespace: "ns", Pod: "a", Detector: "future", Score: 0.9, Time: now.Add(time.Hour)},
	})
	got := s.Fresh(a)
	if _, stale := got[detector.Falco]; stale {
		t.Errorf("a 6m old score is fresh with a 5m TTL: %v", got)
	}
	if got["ext"].Score != 0.4 {
		t.Errorf("ext = %v, want 0.4", got["ext"])
	}
	if !got["future"].Time.Equal(now) {
		t.Errorf("a future time must be clamped to receipt, got %v", got["future"].Time)
	}

	// An older signal arriving late does not replace the newer one.
	s.Put([]detector.Signal{{Namespace: "ns", Pod: "a", Detector: "ext", Score: 0.1, Time: now.Add(-2 * time.Minute)}})
	if s.Fresh(a)["ext"].Score != 0.4 {
		t.Errorf("late older signal replaced the newer score")
	}

	// Bounded: the third pod evicts the least recently updated one (a).
	s.Put([]detector.Signal{{Namespace: "ns", Pod: "b", Detector: "ext", Score: 1}})
	s.Put([]detector.Signal{{Namespace: "ns", Pod: "c", Detector: "ext", Score: 1}})
	if s.Len() != 2 || s.Fresh(a) != nil || s.Fresh(b) == nil {
		t.Errorf("eviction: len=%d a=%v b=%v", s.Len(), s.Fresh(a), s.Fresh(b))
	}

	s.Forget(c)
	if s.Fresh(c) != nil || s.Len() != 1 {
		t.Errorf("Forget left c: len=%d", s.Len())
	}

	now = now.Add(10 * time.Minute)
	s.Sweep()
	if s.Len() != 0 {
		t.Errorf("Sweep kept %d expired pods", s.Len())
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if !r.Known(detector.Behavior) {
		t.Fatal("built-in behavior missing")
	}
	if err := r.Learn("Bad Name"); err == nil {
		t.Error("registered an invalid name")
	}
	if err := r.Learn("my-model"); err != nil {
		t.Fatal(err)
	}
	if n := r.Names(); len(n) != 5 || n[3] != "my-model" {
		t.Errorf("Names() = %v", n)
	}
}

func TestStoreBoundsDetectorsPerPod(t *testing.T) {
	s := NewStore(time.Hour, 10)
	base := time.Now().Add(-time.Minute)
	for i := range MaxDetectorsPerPod + 1 {
		s.Put([]detector.Signal{{Namespace: "n", Pod: "p", Detector: fmt.Sprintf("d%d", i), Score: 1, Time: base.Add(time.Duration(i) * time.Second)}})
	}
	got := s.Fresh(PodKey{"n", "p"})
	if _, ok := got["d0"]; ok || len(got) != MaxDetectorsPerPod {
		t.Errorf("kept %d detectors, d0 present: %v", len(got), ok)
	}
}

func TestRegistryBounded(t *testing.T) {
	r := NewRegistry()
	var err error
	for i := 0; err == nil && i < 2*MaxDetectors; i++ {
		err = r.Learn(fmt.Sprintf("m%d", i))
	}
	if err == nil || len(r.Names()) != MaxDetectors {
		t.Errorf("registry grew to %d", len(r.Names()))
	}
}
