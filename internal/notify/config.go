package notify

import (
	"errors"
	"fmt"
	"net"
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
	// KeyCloudEventsHMACKey signs CloudEvents deliveries like the webhook's.
	KeyCloudEventsHMACKey = "cloudevents-hmac-key"
)

// MinHMACKeyBytes is the shortest signing key accepted: HMAC-SHA256's
// output size, so the key is not the weak part.
const MinHMACKeyBytes = 32

// Sink names, also the "sink" label of metrics.NotificationsTotal.
const (
	SinkSlack       = "slack"
	SinkWebhook     = "webhook"
	SinkCloudEvents = "cloudevents"
)

// Config is where notifications go. It holds credentials (Slack URLs are
// bearer secrets), so it is never logged.
type Config struct {
	SlackWebhookURL    string
	WebhookURL         string
	WebhookHMACKey     []byte
	CloudEventsURL     string
	CloudEventsHMACKey []byte
}

// ConfigFromSecret reads the Secret's keys. Invalid entries are left out and
// reported in the error, so one bad key does not silence the other sinks.
// URLs must be https; allowLoopbackHTTP admits http:// to a loopback host
// (tests only: Options.AllowLoopbackHTTP).
func ConfigFromSecret(s *corev1.Secret, allowLoopbackHTTP bool) (Config, error) {
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
		if err := checkURL(v, allowLoopbackHTTP); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return ""
		}
		return v
	}
	cfg.SlackWebhookURL = get(KeySlackWebhookURL)
	// An unsigned sink would let anyone forge "released" notices.
	signed := func(urlKey, hmacKey string) (string, []byte) {
		u := get(urlKey)
		if u == "" {
			return "", nil
		}
		key := s.Data[hmacKey]
		if len(key) < MinHMACKeyBytes {
			errs = append(errs, fmt.Errorf("%s is set but %s has %d bytes, want at least %d (openssl rand -hex 32): the sink is disabled",
				urlKey, hmacKey, len(key), MinHMACKeyBytes))
			return "", nil
		}
		return u, key
	}
	cfg.WebhookURL, cfg.WebhookHMACKey = signed(KeyWebhookURL, KeyWebhookHMACKey)
	cfg.CloudEventsURL, cfg.CloudEventsHMACKey = signed(KeyCloudEventsURL, KeyCloudEventsHMACKey)
	return cfg, errors.Join(errs...)
}

func checkURL(raw string, allowLoopbackHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		// The parse error quotes the URL, which may hold a token.
		return errors.New("not a valid URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && allowLoopbackHTTP && isLoopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		// Notifications carry what was contained and how; in clear text they
		// can be read and forged on the way.
		return errors.New("scheme must be https (http:// is refused)")
	}
	return errors.New("scheme must be https")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
