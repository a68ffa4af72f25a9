package detection

import (
	"bytes"
	"io"
	"mime"
	"net/http"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// CloudEvent types Bulkhead scores.
const (
	// FalcoCloudEventType is what Falcosidekick's CloudEvents output sends.
	FalcoCloudEventType = "falco.rule.output.v1"
	// ScoreCloudEventType carries a /v1/scores body as data.
	ScoreCloudEventType = "dev.bulkhead.score.v1"
)

// DecodeCloudEvent decodes one CloudEvent in structured
// (application/cloudevents+json) or binary (ce-* headers) mode.
func DecodeCloudEvent(header http.Header, body []byte) (Batch, *Error) {
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	structured := mt == "application/cloudevents+json"
	if !structured && header.Get("Ce-Specversion") == "" {
		return Batch{}, errorf(ReasonUnsupportedMedia, "want application/cloudevents+json or binary mode (ce-* headers), got %q", mt)
	}
	if !structured && mt != "application/json" && mt != "" {
		return Batch{}, errorf(ReasonUnsupportedMedia, "binary-mode data must be application/json, got %q", mt)
	}
	req := &http.Request{Method: http.MethodPost, Header: header, Body: io.NopCloser(bytes.NewReader(body))}
	ev, err := cehttp.NewEventFromHTTPRequest(req)
	if err != nil {
		return Batch{}, errorf(ReasonMalformed, "not a CloudEvent: %v", err)
	}
	if err := ev.Validate(); err != nil {
		return Batch{}, errorf(ReasonMalformed, "invalid CloudEvent: %v", err)
	}
	if dt := ev.DataMediaType(); dt != "" && dt != "application/json" {
		return Batch{}, errorf(ReasonUnsupportedMedia, "data must be application/json, got %q", dt)
	}
	if len(ev.ID()) > maxIDLen {
		return Batch{}, errorf(ReasonMalformed, "id longer than %d characters", maxIDLen)
	}
	// Source is part of the replay key too: bound it like id.
	if len(ev.Source()) > maxIDLen {
		return Batch{}, errorf(ReasonMalformed, "source longer than %d characters", maxIDLen)
	}
	// Source and id together identify an event (CloudEvents spec).
	id := ev.Source() + "/" + ev.ID()
	switch ev.Type() {
	case FalcoCloudEventType:
		it, ok, e := falcoItem(ev.Data())
		if e != nil {
			return Batch{}, e
		}
		if !ok {
			return Batch{Skipped: 1}, nil
		}
		it.ID, it.Signal.ID = id, id
		return Batch{Items: []Item{it}}, nil
	case ScoreCloudEventType:
		b, e := DecodeScores(ev.Data())
		if e != nil {
			return Batch{}, e
		}
		if len(b.Items) == 1 && b.Items[0].ID == "" {
			b.Items[0].ID, b.Items[0].Signal.ID = id, id
		}
		return b, nil
	}
	return Batch{}, errorf(ReasonMalformed, "CloudEvent type %q is not scored; send %s or %s", ev.Type(), FalcoCloudEventType, ScoreCloudEventType)
}
