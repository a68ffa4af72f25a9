package detection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Error is input a source refuses; nothing of the request is kept. Ingest
// answers it with the HTTP status of its Reason.
type Error struct {
	// Reason is a stable CamelCase word clients can switch on.
	Reason  string
	Message string
	// Index is the offending item of a batch, when there is one.
	Index *int
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

// Reasons a source refuses input with.
const (
	ReasonMalformed        = "Malformed"
	ReasonUnsupportedMedia = "UnsupportedMediaType"
	ReasonOutOfRange       = "OutOfRange"
	// ReasonForbidden: the input names a detector it may not speak for.
	ReasonForbidden = "Forbidden"
)

func errorf(reason string, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// at marks the batch item an error is about.
func (e *Error) at(i int) *Error {
	e.Index = &i
	return e
}

var jsonTypes = []string{"application/json"}

// Item is one decoded observation: a score, or a behavioural event for the
// built-in model.
type Item struct {
	// Detector is the name the credential must be allowed to speak for.
	Detector string
	Signal   *detector.Signal
	Behavior *detector.BehaviorEvent
	// ID deduplicates replays; empty when the source has none.
	ID string
}

// Namespace and Pod of the item.
func (it *Item) Namespace() string {
	if it.Signal != nil {
		return it.Signal.Namespace
	}
	return it.Behavior.Namespace
}

// Pod the item is about.
func (it *Item) Pod() string {
	if it.Signal != nil {
		return it.Signal.Pod
	}
	return it.Behavior.Pod
}

// Batch is one request's content.
type Batch struct {
	Items []Item
	// Skipped counts events Bulkhead does not score: no pod (host or audit
	// events), Falco's own metrics, process exits.
	Skipped int
}

const maxIDLen = 253

// decodeOneOrMany decodes one JSON object or an array of them, strictly.
func decodeOneOrMany[T any](body []byte) ([]T, *Error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errorf(ReasonMalformed, "empty body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var out []T
	if body[0] == '[' {
		if err := dec.Decode(&out); err != nil {
			return nil, malformed(err)
		}
		if len(out) == 0 {
			return nil, errorf(ReasonMalformed, "empty batch")
		}
	} else {
		var one T
		if err := dec.Decode(&one); err != nil {
			return nil, malformed(err)
		}
		out = []T{one}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errorf(ReasonMalformed, "trailing data after the JSON value")
	}
	return out, nil
}

func malformed(err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return errorf(ReasonMalformed, "field %q: wrong type %s, want %s", te.Field, te.Value, te.Type)
	}
	return errorf(ReasonMalformed, "malformed JSON: %v", err)
}
