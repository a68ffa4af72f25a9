// Package detection turns observations into decisions to make: every
// source's wire format is decoded into items (one Source each, listed in
// BuiltinSources), behaviour events go through the behavior model, and every
// signal is recorded in the score store, evaluated against the
// ThreatPolicies covering its pod and, when a threshold held, queued in
// Triggers for the per-pod decision (internal/controller/podresponse).
//
//	ingest (HTTP, auth, limits, replay)
//	  → Source.Decode → Pipeline.Accept → Model (behaviour events)
//	  → Evaluator.Record: Store → policy evaluation → Triggers
package detection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// Model is the built-in behavior model: it learns from behaviour events
// and returns the scores it produced, which the pipeline records like any
// other.
type Model interface {
	ObserveBehavior(ctx context.Context, events []detector.BehaviorEvent) ([]detector.Signal, error)
}

// Recorder is the record → evaluate → trigger stage (the Evaluator).
type Recorder interface {
	Record(ctx context.Context, signals []detector.Signal) error
}

// ErrModelDisabled refuses behaviour events that only the model reads
// (system calls) when it is not running.
var ErrModelDisabled = errors.New("the behavior model is disabled")

// Pipeline takes accepted batches: behaviour events to the model, the
// names of external detectors to the registry, and every signal, the
// model's included, to the recorder.
type Pipeline struct {
	Registry *Registry
	// Model is nil when the behavior model is disabled.
	Model    Model
	Recorder Recorder
}

// Accept feeds one authorized batch through the pipeline. accepted counts
// signals and behaviour events taken; skipped adds the events nothing reads
// (behaviour events without a model) to the batch's own. An error means
// nothing was recorded, unless the recorder failed part way.
func (p *Pipeline) Accept(ctx context.Context, b Batch) (accepted, skipped int, err error) {
	signals := make([]detector.Signal, 0, len(b.Items))
	var events []detector.BehaviorEvent
	skipped = b.Skipped
	for i := range b.Items {
		it := &b.Items[i]
		switch {
		case it.Signal != nil:
			signals = append(signals, *it.Signal)
		case p.Model != nil:
			events = append(events, *it.Behavior)
		case it.Detector == detector.Behavior:
			// The syscall format exists only for the model.
			return 0, 0, ErrModelDisabled
		default:
			skipped++
		}
	}
	accepted = len(signals) + len(events)
	if len(events) > 0 {
		start := time.Now()
		produced, err := p.Model.ObserveBehavior(ctx, events)
		metrics.DetectorLatency.WithLabelValues(detector.Behavior).Observe(time.Since(start).Seconds() / float64(len(events)))
		if err != nil {
			return 0, 0, fmt.Errorf("behavior model: %w", err)
		}
		signals = append(signals, produced...)
	}
	for i := range signals {
		// Built-in names are known from the start.
		if name := signals[i].Detector; !p.Registry.Known(name) {
			// A full registry only loses the "never heard from" hint.
			_ = p.Registry.Learn(name)
		}
	}
	if len(signals) > 0 {
		if err := p.Recorder.Record(ctx, signals); err != nil {
			return 0, 0, fmt.Errorf("recording: %w", err)
		}
	}
	return accepted, skipped, nil
}
