package ingest

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
	"github.com/bulkhead-dev/bulkhead/internal/sensorhub"
)

// sourceSensor labels the node sensors' requests in metrics.
const sourceSensor = "sensor"

// Sensors authenticates node sensors by their projected ServiceAccount
// token (TokenReview; no shared secret) and holds each to its node.
type Sensors struct {
	Reviewer interface {
		Review(ctx context.Context, token string) (sensorhub.Identity, error)
	}
	Hub *sensorhub.Hub
}

// serveSensor answers POST /v1/sensor: a node's heartbeat, coverage, kernel
// enforcement and behavior scores, all-or-nothing.
func (h *Handler) serveSensor(w http.ResponseWriter, r *http.Request) {
	n, err := h.sensorReport(r)
	if err != nil {
		metrics.IngestedEvents.WithLabelValues(sourceSensor, err.Reason).Add(float64(max(n, 1)))
		if err.Status >= 500 {
			logf.FromContext(r.Context()).Error(err, "sensor report failed")
		}
		writeJSON(w, err.Status, err)
		return
	}
	metrics.IngestedEvents.WithLabelValues(sourceSensor, "accepted").Add(float64(n))
	writeJSON(w, http.StatusAccepted, map[string]int{"accepted": n, "skipped": 0})
}

func (h *Handler) sensorReport(r *http.Request) (int, *Error) {
	if r.Method != http.MethodPost {
		return 0, errorf(ReasonMethod, "use POST")
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return 0, errorf(ReasonUnauthorized, "no bearer token: sensors present their projected ServiceAccount token (audience %s)", wire.Audience)
	}
	id, rerr := h.cfg.Sensors.Reviewer.Review(r.Context(), token)
	switch {
	case errors.Is(rerr, sensorhub.ErrUnauthenticated):
		return 0, errorf(ReasonUnauthorized, "not a sensor token: want the bulkhead-sensor ServiceAccount's token for audience %s", wire.Audience)
	case rerr != nil:
		return 0, errorf(ReasonUnavailable, "%v", rerr)
	}
	if !h.limiter("sensor/" + id.Node).Allow() {
		return 0, errorf(ReasonRateLimited, "sensor of node %q is over %v requests/s", id.Node, h.cfg.Rate)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return 0, errorf(ReasonUnsupportedMedia, "content type %q, want application/json", mt)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return 0, errorf(ReasonTooLarge, "body over %d bytes", h.cfg.MaxBodyBytes)
		}
		return 0, errorf(ReasonMalformed, "reading body: %v", err)
	}
	rep, err := wire.Decode(raw)
	if err != nil {
		e := errorf(ReasonMalformed, "%v", err)
		var we *wire.Error
		if errors.As(err, &we) && we.Index >= 0 {
			e = e.at(we.Index)
		}
		return 0, e
	}
	signals, rej := h.cfg.Sensors.Hub.Accept(r.Context(), id, rep)
	if rej != nil {
		e := &Error{Status: rej.Status, Reason: rej.Reason, Message: rej.Msg}
		if rej.Index >= 0 {
			e = e.at(rej.Index)
		}
		return len(rep.Scores), e
	}
	if len(signals) == 0 {
		return 0, nil
	}
	items := make([]detection.Item, len(signals))
	keys := make([]string, len(signals))
	for i := range signals {
		items[i] = detection.Item{Detector: detector.Behavior, Signal: &signals[i], ID: signals[i].ID}
		if signals[i].ID != "" {
			keys[i] = detector.Behavior + "\x00" + signals[i].ID
		}
	}
	if i, ok := h.replay.reserve(keys); !ok {
		return len(items), errorf(ReasonReplayed, "id %q was already accepted", signals[i].ID).at(i)
	}
	accepted, _, e := h.accept(r.Context(), detection.Batch{Items: items})
	if e != nil {
		h.replay.release(keys)
		return len(items), e
	}
	return accepted, nil
}
