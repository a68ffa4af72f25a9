// Package wire is the node sensor's report to the manager (POST /v1/sensor):
// behavior scores, a heartbeat with the node's BPF coverage, and the kernel
// enforcement state of its quarantined pods. Both ends use these types; the
// manager validates with Decode before anything is recorded.
package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"time"
)

// Path is the ingestion route sensors post to.
const Path = "/v1/sensor"

// Bounds on one report: a node runs at most a few hundred pods.
const (
	MaxScores      = 1000
	MaxEnforcement = 1000
	MaxEvidence    = 4 << 10
	MaxReason      = 1024
	MaxPrograms    = 16
)

// Report is one request from one node's sensor.
type Report struct {
	Node        string        `json:"node"`
	Time        time.Time     `json:"time"`
	Heartbeat   bool          `json:"heartbeat"`
	Coverage    Coverage      `json:"coverage"`
	Scores      []Score       `json:"scores,omitempty"`
	Enforcement []Enforcement `json:"enforcement,omitempty"`
	// Dropped counts scores lost while the manager was unreachable.
	Dropped uint64 `json:"dropped,omitempty"`
}

// Coverage says whether the node's behaviour is observed at all.
type Coverage struct {
	Ready bool `json:"ready"`
	// Missing names what the kernel lacks (BTF, CAP_BPF, an attach point).
	Missing string `json:"missing,omitempty"`
}

// Score is the behavior detector's score for one pod.
type Score struct {
	Namespace string          `json:"namespace"`
	Pod       string          `json:"pod"`
	Score     float64         `json:"score"`
	Reason    string          `json:"reason,omitempty"`
	Evidence  json.RawMessage `json:"evidence,omitempty"`
	ID        string          `json:"id,omitempty"`
	Time      time.Time       `json:"time"`
}

// Enforcement is the kernel state of one quarantined pod on the node.
type Enforcement struct {
	Namespace        string    `json:"namespace"`
	Pod              string    `json:"pod"`
	Quarantine       string    `json:"quarantine"`
	Enforced         bool      `json:"enforced"`
	Programs         []string  `json:"programs,omitempty"`
	ConnCut          bool      `json:"connCut"`
	SocketsDestroyed int       `json:"socketsDestroyed,omitempty"`
	Method           string    `json:"method,omitempty"`
	Reason           string    `json:"reason,omitempty"`
	Time             time.Time `json:"time"`
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

func validName(s string, max int, re *regexp.Regexp) bool { return len(s) <= max && re.MatchString(s) }

// Error is a validation failure; Index names the offending item, or -1.
type Error struct {
	Field string
	Index int
	Msg   string
}

func (e *Error) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("%s[%d]: %s", e.Field, e.Index, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// Decode parses and validates a report: unknown fields, NaN, scores outside
// [0,1], bad names and oversized parts are errors, and nothing of a report
// that fails is used.
func Decode(body []byte) (Report, error) {
	var r Report
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Report{}, &Error{Field: "body", Index: -1, Msg: err.Error()}
	}
	if dec.More() {
		return Report{}, &Error{Field: "body", Index: -1, Msg: "trailing data after the report"}
	}
	return r, r.Validate()
}

// Validate checks a report's bounds and names.
func (r *Report) Validate() error {
	if !validName(r.Node, 253, dnsSubdomain) {
		return &Error{Field: "node", Index: -1, Msg: fmt.Sprintf("%q is not a node name", r.Node)}
	}
	if r.Time.IsZero() {
		return &Error{Field: "time", Index: -1, Msg: "required"}
	}
	if len(r.Coverage.Missing) > MaxReason {
		return &Error{Field: "coverage.missing", Index: -1, Msg: "too long"}
	}
	if len(r.Scores) > MaxScores {
		return &Error{Field: "scores", Index: -1, Msg: fmt.Sprintf("%d scores, at most %d", len(r.Scores), MaxScores)}
	}
	if len(r.Enforcement) > MaxEnforcement {
		return &Error{Field: "enforcement", Index: -1, Msg: fmt.Sprintf("%d entries, at most %d", len(r.Enforcement), MaxEnforcement)}
	}
	for i, s := range r.Scores {
		switch {
		case !validName(s.Namespace, 63, dnsLabel):
			return &Error{Field: "scores", Index: i, Msg: fmt.Sprintf("namespace %q is not a DNS label", s.Namespace)}
		case !validName(s.Pod, 253, dnsSubdomain):
			return &Error{Field: "scores", Index: i, Msg: fmt.Sprintf("pod %q is not a pod name", s.Pod)}
		case math.IsNaN(s.Score) || s.Score < 0 || s.Score > 1:
			return &Error{Field: "scores", Index: i, Msg: fmt.Sprintf("score %v is outside [0,1]", s.Score)}
		case len(s.Evidence) > MaxEvidence:
			return &Error{Field: "scores", Index: i, Msg: fmt.Sprintf("evidence is %d bytes, at most %d", len(s.Evidence), MaxEvidence)}
		case len(s.Reason) > MaxReason || len(s.ID) > 253:
			return &Error{Field: "scores", Index: i, Msg: "reason or id too long"}
		case s.Time.IsZero():
			return &Error{Field: "scores", Index: i, Msg: "time is required"}
		}
		if len(s.Evidence) > 0 && !json.Valid(s.Evidence) {
			return &Error{Field: "scores", Index: i, Msg: "evidence is not JSON"}
		}
	}
	for i, e := range r.Enforcement {
		switch {
		case !validName(e.Namespace, 63, dnsLabel) || !validName(e.Pod, 253, dnsSubdomain):
			return &Error{Field: "enforcement", Index: i, Msg: "namespace or pod is not a valid name"}
		case !validName(e.Quarantine, 63, dnsSubdomain):
			return &Error{Field: "enforcement", Index: i, Msg: fmt.Sprintf("quarantine %q is not a valid name", e.Quarantine)}
		case len(e.Programs) > MaxPrograms || len(e.Reason) > MaxReason || len(e.Method) > 64:
			return &Error{Field: "enforcement", Index: i, Msg: "too many programs, or reason/method too long"}
		case e.SocketsDestroyed < 0:
			return &Error{Field: "enforcement", Index: i, Msg: "socketsDestroyed is negative"}
		}
	}
	return nil
}

// Audience is what a sensor's projected ServiceAccount token is issued for;
// the manager's TokenReview requires it.
const Audience = "bulkhead-ingest"
