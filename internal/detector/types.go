// Package detector holds the data every detector speaks: a Signal is one
// per-pod score in [0,1] with evidence, an Entry the latest one kept, a
// BehaviorEvent a raw observation for the behavior model. What is done with
// them lives in internal/detection.
package detector

import (
	"encoding/json"
	"time"
)

// Names of the built-in detectors. Which sources speak for them, and so
// which names external models may not post under, is the source table of
// internal/detection (detection.BuiltinSources).
const (
	Behavior     = "behavior"
	Falco        = "falco"
	Tetragon     = "tetragon"
	Alertmanager = "alertmanager"
)

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

// Entry is the latest score one detector gave one pod.
type Entry struct {
	Score    float64
	Reason   string
	Evidence []byte
	Time     time.Time
}
