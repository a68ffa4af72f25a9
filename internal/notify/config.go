package notify

import (
	"errors"
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the notifications Secret. Every sink is optional; a Secret with
// none of them, or no Secret, disables notifications.
const (
	KeySlackWebhookURL = "slack-webhook-url"
	KeyWebhookURL      = "webhook-url"
	KeyWebhookHMACKey  = "webhook-hmac-key"
	KeyCloudEventsURL  = "cloudevents-url"
)

// Sink names, also the "sink" label of metrics.NotificationsTotal.
const (
	SinkSlack       = "slack"
	SinkWebhook     = "webhook"
	SinkCloudEvents = "cloudevents"
)

// Config is where notifications go. It holds credentials (Slack URLs are
// bearer secrets), so it is never logged.
type Config struct {
	SlackWebhookURL string
	WebhookURL      string
	WebhookHMACKey  []byte
	CloudEventsURL  string
}

// ConfigFromSecret reads the Secret's keys. Invalid entries are left out and
// reported in the error, so one bad key does not silence the other sinks.
func ConfigFromSecret(s *corev1.Secret) (Config, error) {
	var cfg Config
	if s == nil {
		return cfg, nil
	}
	var errs []error
	get := func(key string) string {
		v := string(s.Data[key])
		if v == "" {
			return ""
		}
		if err := checkURL(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return ""
		}
		return v
	}
	cfg.SlackWebhookURL = get(KeySlackWebhookURL)
	cfg.CloudEventsURL = get(KeyCloudEventsURL)
	if wh := get(KeyWebhookURL); wh != "" {
		// An unsigned webhook would let anyone forge "released" notices.
		if key := s.Data[KeyWebhookHMACKey]; len(key) > 0 {
			cfg.WebhookURL, cfg.WebhookHMACKey = wh, key
		} else {
			errs = append(errs, fmt.Errorf("%s is set but %s is empty: the webhook sink is disabled", KeyWebhookURL, KeyWebhookHMACKey))
		}
	}
	return cfg, errors.Join(errs...)
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// The parse error quotes the URL, which may hold a token.
		return errors.New("not a valid URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return errors.New("scheme must be https or http")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}
