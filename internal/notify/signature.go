package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of the generic webhook.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>", the MAC
	// taken over "<t>.<body>" with the shared key. Binding the timestamp into
	// the MAC lets receivers reject replays older than their tolerance.
	SignatureHeader = "X-Bulkhead-Signature"
	// DeliveryHeader is the event ID, identical across retries.
	DeliveryHeader = "X-Bulkhead-Delivery"
)

// DefaultSignatureTolerance is how old a signed delivery Verify accepts by
// default: it covers clock skew and the delivery timeout, not the retries
// (each retry is signed afresh).
const DefaultSignatureTolerance = 5 * time.Minute

// Sign returns the SignatureHeader value for body at time t.
func Sign(key, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(key, ts, body))
}

func mac(key []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a SignatureHeader value against body, as a receiver should:
// the MAC must match and the timestamp be within tolerance of now.
func Verify(key, body []byte, header string, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	if ts == "" || sig == "" {
		return errors.New("signature header needs t= and v1=")
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return errors.New("signature is not hex")
	}
	if !hmac.Equal(got, mac(key, ts, body)) {
		return errors.New("signature does not match")
	}
	if age := now.Sub(time.Unix(unix, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("timestamp is %s away from now, beyond the %s tolerance", age.Round(time.Second), tolerance)
	}
	return nil
}
