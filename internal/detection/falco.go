package detection

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// falcoEvent is Falco's JSON output, and Falcosidekick's (which adds uuid).
type falcoEvent struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         string         `json:"time"`
	Source       string         `json:"source"`
	OutputFields map[string]any `json:"output_fields"`
}

// FalcoScore maps a Falco priority to a score.
func FalcoScore(priority string) float64 {
	switch strings.ToLower(priority) {
	case "emergency", "alert", "critical":
		return 1.0
	case "error":
		return 0.9
	case "warning":
		return 0.7
	case "notice":
		return 0.5
	}
	return 0.2
}

// DecodeFalco decodes Falco or Falcosidekick JSON: one event, or several one
// after another (newline-delimited, as Falco's file and stdout outputs write).
func DecodeFalco(body []byte) (Batch, *Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var b Batch
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			if i == 0 {
				return Batch{}, errorf(ReasonMalformed, "empty body")
			}
			return b, nil
		} else if err != nil {
			return Batch{}, malformed(err).at(i)
		}
		it, ok, e := falcoItem(raw)
		if e != nil {
			return Batch{}, e.at(i)
		}
		if !ok {
			b.Skipped++
			continue
		}
		b.Items = append(b.Items, it)
	}
}

func falcoItem(raw json.RawMessage) (Item, bool, *Error) {
	var ev falcoEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Item{}, false, malformed(err)
	}
	if ev.Rule == "" || ev.Priority == "" {
		return Item{}, false, errorf(ReasonMalformed, "a Falco event needs rule and priority")
	}
	if len(ev.UUID) > maxIDLen {
		return Item{}, false, errorf(ReasonMalformed, "uuid longer than %d characters", maxIDLen)
	}
	ns, pod := falcoField(ev.OutputFields, "k8s.ns.name"), falcoField(ev.OutputFields, "k8s.pod.name")
	if ns == "" || pod == "" {
		// Host, audit and internal events name no pod.
		return Item{}, false, nil
	}
	sig := &detector.Signal{Namespace: ns, Pod: pod, Detector: detector.Falco, Score: FalcoScore(ev.Priority),
		Reason: ev.Rule + ": " + ev.Output, Evidence: raw, ID: ev.UUID}
	if ev.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ev.Time)
		if err != nil {
			return Item{}, false, errorf(ReasonMalformed, "time %q is not RFC 3339", ev.Time)
		}
		sig.Time = t
	}
	return Item{Detector: detector.Falco, Signal: sig, ID: ev.UUID}, true, nil
}

// falcoField reads a string output field; Falco writes a missing one as null
// (or "<NA>" in older text).
func falcoField(f map[string]any, key string) string {
	s, _ := f[key].(string)
	if s == "<NA>" {
		return ""
	}
	return s
}
