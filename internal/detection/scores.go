package detection

import (
	"encoding/json"
	"math"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// scoreIn is the wire form of POST /v1/scores.
type scoreIn struct {
	Namespace string          `json:"namespace"`
	Pod       string          `json:"pod"`
	Detector  string          `json:"detector"`
	Score     *float64        `json:"score"`
	Reason    string          `json:"reason"`
	Evidence  json.RawMessage `json:"evidence"`
	ID        string          `json:"id"`
	Time      *time.Time      `json:"time"`
}

// DecodeScores decodes POST /v1/scores: one object or a batch.
func DecodeScores(body []byte) (Batch, *Error) {
	in, e := decodeOneOrMany[scoreIn](body)
	if e != nil {
		return Batch{}, e
	}
	b := Batch{Items: make([]Item, 0, len(in))}
	for i := range in {
		s := &in[i]
		if e := validateScore(s); e != nil {
			return Batch{}, e.at(i)
		}
		sig := &detector.Signal{Namespace: s.Namespace, Pod: s.Pod, Detector: s.Detector, Score: *s.Score,
			Reason: s.Reason, Evidence: s.Evidence, ID: s.ID}
		if s.Time != nil {
			sig.Time = *s.Time
		}
		b.Items = append(b.Items, Item{Detector: s.Detector, Signal: sig, ID: s.ID})
	}
	return b, nil
}

func validateScore(s *scoreIn) *Error {
	switch {
	case s.Namespace == "" || s.Pod == "":
		return errorf(ReasonMalformed, "namespace and pod are required")
	case !ValidName(s.Detector):
		return errorf(ReasonMalformed, "detector %q is not a DNS label", s.Detector)
	case BuiltinDetectors(BuiltinSources())[s.Detector]:
		// Built-in detectors speak only through their own formats.
		return errorf(ReasonForbidden, "detector %q is built in: post its own format (its /v1/<source>), not a score", s.Detector)
	case s.Score == nil:
		return errorf(ReasonMalformed, "score is required")
	case math.IsNaN(*s.Score):
		return errorf(ReasonMalformed, "score is NaN")
	case *s.Score < 0 || *s.Score > 1:
		return errorf(ReasonOutOfRange, "score %v is outside [0,1]", *s.Score)
	case len(s.ID) > maxIDLen:
		return errorf(ReasonMalformed, "id longer than %d characters", maxIDLen)
	case len(s.Reason) > 1024:
		return errorf(ReasonMalformed, "reason longer than 1024 characters")
	}
	return nil
}
