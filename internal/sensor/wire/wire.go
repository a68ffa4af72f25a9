// Package wire is the sensor -> manager ingestion format (POST /v1/sensor),
// shared by the sensor's client and the manager's endpoint. It holds types
// only, so the manager can import it without the sensor's dependencies.
package wire

import (
	"encoding/json"
	"time"
)

const (
	// Path is the manager's sensor ingestion path.
	Path = "/v1/sensor"
	// Audience of the projected ServiceAccount token the sensor presents.
	Audience = "bulkhead-ingest"
	// MaxEvidenceBytes bounds one score's evidence.
	MaxEvidenceBytes = 4096
	// MaxReasonBytes bounds one score's reason (a Quarantine summary holds 1024).
	MaxReasonBytes = 1024
)

// Payload is one request: a heartbeat, with any scores and the node's
// enforcement state.
type Payload struct {
	Node        string        `json:"node"`
	Time        time.Time     `json:"time"`
	Heartbeat   bool          `json:"heartbeat"`
	Coverage    Coverage      `json:"coverage"`
	Scores      []Score       `json:"scores"`
	Enforcement []Enforcement `json:"enforcement"`
	// Dropped counts scores dropped since the sensor started because the
	// manager was unreachable and the buffer was full (a counter: it only
	// grows, so a lost request loses nothing).
	Dropped uint64 `json:"dropped"`
}

// Coverage says whether the node's behaviour is observed, and if not, what is
// missing (a kernel feature, a refused attach).
type Coverage struct {
	Ready   bool   `json:"ready"`
	Missing string `json:"missing"`
}

// Score is one behavior detector score for one pod.
type Score struct {
	Namespace string          `json:"namespace"`
	Pod       string          `json:"pod"`
	Score     float64         `json:"score"`
	Reason    string          `json:"reason"`
	Evidence  json.RawMessage `json:"evidence,omitempty"`
	// ID is unique per score (node/pod-uid/sequence), for deduplication of retries.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
}

// Enforcement is the kernel enforcement state of one quarantined pod.
type Enforcement struct {
	Namespace        string    `json:"namespace"`
	Pod              string    `json:"pod"`
	Quarantine       string    `json:"quarantine"`
	Enforced         bool      `json:"enforced"`
	Programs         []string  `json:"programs"`
	ConnCut          bool      `json:"connCut"`
	SocketsDestroyed int       `json:"socketsDestroyed"`
	Method           string    `json:"method"`
	Reason           string    `json:"reason"`
	Time             time.Time `json:"time"`
}
