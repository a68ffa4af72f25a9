package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// sender delivers one event to one sink, once.
type sender interface {
	send(ctx context.Context, c *http.Client, ev Event, now time.Time) error
}

// permanentError is not retried (a 4xx other than 408 and 429: the request
// itself is wrong, sending it again will not help).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

func do(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		// url.Error quotes the URL, which may hold a token; keep only the cause.
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return fmt.Errorf("POST %s: %w", req.URL.Host, err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("POST %s: %s", req.URL.Host, resp.Status)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return permanentError{fmt.Errorf("%w: redirects are not followed", err)}
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return permanentError{err}
	}
	return err
}

func postJSON(ctx context.Context, c *http.Client, url string, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return permanentError{errors.New("cannot build request")}
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	return do(c, req)
}

// slackSink posts to a Slack incoming webhook.
type slackSink struct{ url string }

func (s slackSink) send(ctx context.Context, c *http.Client, ev Event, _ time.Time) error {
	body, err := json.Marshal(map[string]string{"text": slackText(ev)})
	if err != nil {
		return permanentError{err}
	}
	return postJSON(ctx, c, s.url, body, nil)
}

var phaseEmoji = map[string]string{
	"Pending": ":hourglass:", "Containing": ":construction:", "Contained": ":rotating_light:",
	"Releasing": ":unlock:", "Released": ":white_check_mark:", "Failed": ":x:",
}

// slackEscaper escapes Slack's control characters: summaries and messages
// can carry attacker-chosen text (a process name), which must not become
// links or mentions.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// esc escapes one field for Slack: every field can be chosen by a tenant
// (names, owner, detector, summary, messages).
func esc(s string) string { return slackEscaper.Replace(s) }

func slackText(ev Event) string {
	var b strings.Builder
	switch ev.Type {
	case BudgetExhaustedType:
		fmt.Fprintf(&b, ":no_entry: ThreatPolicy *%s* has no containment budget left\n> %s", esc(ev.Policy), esc(ev.Message))
		return b.String()
	case AutoReleaseExtendedType:
		fmt.Fprintf(&b, ":hourglass: Quarantine *%s/%s* stays contained: auto-release extended\n> %s", esc(ev.Namespace), esc(ev.Quarantine), esc(ev.Message))
		return b.String()
	}
	fmt.Fprintf(&b, "%s Quarantine *%s/%s* is now *%s*", phaseEmoji[string(ev.To)], esc(ev.Namespace), esc(ev.Quarantine), esc(string(ev.To)))
	if ev.From != "" {
		fmt.Fprintf(&b, " (was %s)", esc(string(ev.From)))
	}
	fmt.Fprintf(&b, "\nTarget: %s/%s", esc(string(ev.Target.Kind)), esc(ev.Target.Name))
	if ev.Owner != "" {
		fmt.Fprintf(&b, " (owner %s)", esc(ev.Owner))
	}
	if r := ev.Reason; r != nil {
		if r.Policy != "" {
			fmt.Fprintf(&b, "\nPolicy: %s", esc(r.Policy))
		}
		if r.Score != "" {
			fmt.Fprintf(&b, ", score %s", esc(string(r.Score)))
		}
		if r.Detector != "" {
			fmt.Fprintf(&b, " (%s)", esc(r.Detector))
		}
		if r.Summary != "" {
			fmt.Fprintf(&b, "\n> %s", esc(r.Summary))
		}
	}
	if !ev.Approved && !ev.Released {
		fmt.Fprintf(&b, "\nWaiting for approval: `kubectl bulkhead approve %s -n %s`", esc(ev.Quarantine), esc(ev.Namespace))
	}
	for _, a := range ev.Actions {
		fmt.Fprintf(&b, "\n• %s: %s", esc(string(a.Type)), esc(string(a.State)))
		if a.Resource != "" {
			fmt.Fprintf(&b, " %s", esc(a.Resource))
		}
		if a.Message != "" {
			fmt.Fprintf(&b, " — %s", esc(a.Message))
		}
	}
	return b.String()
}

// webhookSink posts the Event as JSON, signed with HMAC-SHA256.
type webhookSink struct {
	url string
	key []byte
}

func (s webhookSink) send(ctx context.Context, c *http.Client, ev Event, now time.Time) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return permanentError{err}
	}
	h := http.Header{}
	h.Set(SignatureHeader, Sign(s.key, body, now))
	h.Set(DeliveryHeader, ev.ID)
	return postJSON(ctx, c, s.url, body, h)
}

// cloudEventsSink posts a binary-mode CloudEvent whose data is the Event,
// signed like the webhook (SignatureHeader over the data).
type cloudEventsSink struct {
	url string
	key []byte
}

// CloudEventSource is the CloudEvents source attribute.
const CloudEventSource = "bulkhead.dev/manager"

func (s cloudEventsSink) send(ctx context.Context, c *http.Client, ev Event, now time.Time) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return permanentError{err}
	}
	ce := cloudevent.New()
	ce.SetID(ev.ID)
	ce.SetType(ev.Type)
	ce.SetSource(CloudEventSource)
	if ev.Quarantine != "" {
		ce.SetSubject(ev.Namespace + "/" + ev.Quarantine)
	} else {
		ce.SetSubject("threatpolicy/" + ev.Policy)
	}
	ce.SetTime(ev.Time)
	if err := ce.SetData(cloudevent.ApplicationJSON, data); err != nil {
		return permanentError{err}
	}
	if err := ce.Validate(); err != nil {
		return permanentError{err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, nil)
	if err != nil {
		return permanentError{errors.New("cannot build request")}
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ce), req); err != nil {
		return permanentError{err}
	}
	req.Header.Set(SignatureHeader, Sign(s.key, data, now))
	return do(c, req)
}
