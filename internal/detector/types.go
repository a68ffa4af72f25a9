// Package detector is the contract between signal ingestion, detectors and
// policy evaluation: every detector turns observations into per-pod scores in
// [0,1] with evidence.
package detector

import (
	"context"
	"encoding/json"
	"time"
)

// Built-in detector names. External models may not post under these.
const (
	Behavior     = "behavior"
	Falco        = "falco"
	Tetragon     = "tetragon"
	Alertmanager = "alertmanager"
)

// BuiltIn reports whether name is one of Bulkhead's own detectors.
func BuiltIn(name string) bool {
	switch name {
	case Behavior, Falco, Tetragon, Alertmanager:
		return true
	}
	return false
}

// Signal is one accepted score for one pod from one detector.
type Signal struct {
	Namespace string
	Pod       string
	Detector  string
	// Score is in [0,1]; validated before it gets here.
	Score    float64
	Reason   string
	Evidence json.RawMessage
	// ID deduplicates replays; empty when the source has none.
	ID   string
	Time time.Time
}

// BehaviorEvent is a raw behavioural observation of one pod, fed to the
// built-in behavior model (not scored by itself). Exactly one of the
// observation fields is set.
type BehaviorEvent struct {
	Namespace string
	Pod       string
	Container string
	Time      time.Time

	Exec     *ExecEvent
	Syscalls []string // a run of system calls, in order, by name or number
	Connect  *ConnectEvent
	Metrics  *ResourceSample
}

// ExecEvent is a process execution.
type ExecEvent struct {
	Binary       string
	Arguments    string
	ParentBinary string
	UID          int64
}

// ConnectEvent is an outbound network connection.
type ConnectEvent struct {
	Address  string // IP or host
	Port     int32
	Protocol string // TCP, UDP
}

// ResourceSample is one sample of resource usage (per second rates).
type ResourceSample struct {
	CPUMillicores    float64
	MemoryBytes      float64
	NetworkRxBytes   float64
	NetworkTxBytes   float64
	DiskReadBytes    float64
	DiskWrittenBytes float64
}

// BehaviorObserver consumes behavioural events (the built-in behavior model)
// and returns the scores it produced, if any, for recording like any other.
type BehaviorObserver interface {
	ObserveBehavior(ctx context.Context, events []BehaviorEvent) ([]Signal, error)
}

// Sink records accepted signals (the score store); policy evaluation follows.
type Sink interface {
	Record(ctx context.Context, signals []Signal) error
}
