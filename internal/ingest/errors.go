package ingest

import (
	"fmt"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
)

// Error is a rejected request, answered with Status and a JSON body.
type Error struct {
	Status int `json:"code"`
	// Reason is a stable CamelCase word clients can switch on.
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Index is the offending item of a batch, when there is one.
	Index *int `json:"index,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Reason, e.Message) }

// Reasons, one per status code of the brief (and a few transport ones).
const (
	ReasonMalformed        = detection.ReasonMalformed
	ReasonUnauthorized     = "Unauthorized"
	ReasonForbidden        = detection.ReasonForbidden
	ReasonReplayed         = "Replayed"
	ReasonTooLarge         = "TooLarge"
	ReasonUnsupportedMedia = detection.ReasonUnsupportedMedia
	ReasonOutOfRange       = detection.ReasonOutOfRange
	ReasonUnknownPod       = "UnknownPod"
	ReasonRateLimited      = "RateLimited"
	ReasonMethod           = "MethodNotAllowed"
	ReasonUnavailable      = "Unavailable"
	ReasonInternal         = "Internal"
	// Refused before a route reads the request.
	ReasonRateLimitedAddress = "RateLimitedAddress"
	ReasonNotFound           = "NotFound"
	ReasonTooManyConnections = "TooManyConnections"
)

var reasonStatus = map[string]int{
	ReasonMalformed:          http.StatusBadRequest,
	ReasonUnauthorized:       http.StatusUnauthorized,
	ReasonForbidden:          http.StatusForbidden,
	ReasonReplayed:           http.StatusConflict,
	ReasonTooLarge:           http.StatusRequestEntityTooLarge,
	ReasonUnsupportedMedia:   http.StatusUnsupportedMediaType,
	ReasonOutOfRange:         http.StatusUnprocessableEntity,
	ReasonUnknownPod:         http.StatusUnprocessableEntity,
	ReasonRateLimited:        http.StatusTooManyRequests,
	ReasonMethod:             http.StatusMethodNotAllowed,
	ReasonUnavailable:        http.StatusServiceUnavailable,
	ReasonInternal:           http.StatusInternalServerError,
	ReasonRateLimitedAddress: http.StatusTooManyRequests,
	ReasonNotFound:           http.StatusNotFound,
}

func errorf(reason string, format string, args ...any) *Error {
	return &Error{Status: reasonStatus[reason], Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// fromDecode answers a source's refusal with its reason's status.
func fromDecode(e *detection.Error) *Error {
	return &Error{Status: reasonStatus[e.Reason], Reason: e.Reason, Message: e.Message, Index: e.Index}
}

// at marks the batch item an error is about.
func (e *Error) at(i int) *Error {
	e.Index = &i
	return e
}
