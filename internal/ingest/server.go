// Package ingest is Bulkhead's signal ingestion: an HTTPS server that
// authenticates detectors, has each source (internal/detection) decode its
// format into signals and behaviour events, refuses anything malformed,
// replayed or too much, and hands the rest to the detection pipeline
// all-or-nothing per request.
//
// POST /v1/<source> for every detection.BuiltinSources entry (scores, falco,
// cloudevents, tetragon, alertmanager, syscalls) answers 202 {"accepted":n,"skipped":m}
// (skipped: events that name no pod, or kinds Bulkhead does not score), or
// an Error as JSON {"code","reason","message","index"}: 400 malformed or
// wrong type (NaN too), 401 no or bad credential, 403 detector or namespace
// not allowed, 409 replayed id, 413 too large, 415 content type, 422 out of
// range or unknown pod, 429 rate limited; index names the batch item.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// Defaults for Config's limits.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultRate         = 50
	DefaultBurst        = 100
	DefaultReplayWindow = time.Hour
	DefaultReplayMax    = 100_000
	// Per client address, before authentication: a generous multiple of
	// one credential's rate, so only floods are refused.
	DefaultAddressRate  = 200
	DefaultAddressBurst = 400
)

// Config wires the handler to the rest of the manager.
type Config struct {
	Auth *Authenticator
	// Detection takes every accepted batch (a *detection.Pipeline).
	Detection Detection
	// Sources are the routes served; nil: detection.BuiltinSources().
	Sources []detection.Source
	// Pods answers whether a pod exists (the manager's cache).
	Pods client.Reader

	MaxBodyBytes int64
	// Rate and Burst limit requests per credential.
	Rate  rate.Limit
	Burst int
	// AddressRate and AddressBurst limit requests per client address (an
	// IPv6 /64), checked before authentication; a negative rate disables.
	AddressRate  rate.Limit
	AddressBurst int
	ReplayWindow time.Duration
	ReplayMax    int

	// Sensors, when set, serves POST /v1/sensor for the node sensors.
	Sensors *Sensors
	// Explain, when set, serves GET /v1/explain/{namespace}/{pod}: a pod's
	// live scores for Kubernetes users allowed to get its quarantines.
	Explain *Explain
}

// Detection is where accepted batches go.
type Detection interface {
	Accept(ctx context.Context, b detection.Batch) (accepted, skipped int, err error)
}

// Handler serves the ingestion API.
type Handler struct {
	cfg    Config
	mux    *http.ServeMux
	replay *replayGuard
	// builtin are the detectors the sources speak for.
	builtin map[string]bool

	addresses *addressLimiter

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// ReplayIDs lists the accepted ids still inside the replay window, newest
// first, at most max (for a successor: internal/handover).
func (h *Handler) ReplayIDs(max int) []ReplayID { return h.replay.snapshot(max) }

// RestoreReplayIDs makes a predecessor's ids count as seen, so a signal it
// accepted is refused as a replay here too; it returns how many were kept.
func (h *Handler) RestoreReplayIDs(ids []ReplayID) int { return h.replay.restore(ids) }

// NewHandler applies defaults to cfg and builds the routes.
func NewHandler(cfg Config) *Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	if cfg.ReplayMax <= 0 {
		cfg.ReplayMax = DefaultReplayMax
	}
	if cfg.AddressRate == 0 {
		cfg.AddressRate = DefaultAddressRate
	}
	if cfg.AddressBurst <= 0 {
		cfg.AddressBurst = DefaultAddressBurst
	}
	if cfg.Sources == nil {
		cfg.Sources = detection.BuiltinSources()
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), replay: newReplayGuard(cfg.ReplayWindow, cfg.ReplayMax),
		builtin: detection.BuiltinDetectors(cfg.Sources), limiters: map[string]*rate.Limiter{}}
	if cfg.AddressRate > 0 {
		h.addresses = newAddressLimiter(cfg.AddressRate, cfg.AddressBurst, maxAddresses)
	}
	for _, src := range cfg.Sources {
		h.route(src)
	}
	if cfg.Sensors != nil {
		h.mux.HandleFunc(wire.Path, h.serveSensor)
	}
	if cfg.Explain != nil {
		h.mux.HandleFunc(ExplainPath+"{namespace}/{pod}", h.serveExplain)
	}
	return h
}

// ServeHTTP limits each client address before anything else is read, then
// routes; unknown paths are counted too.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.addresses != nil && !h.addresses.allow(r.RemoteAddr) {
		metrics.IngestRefused.WithLabelValues(ReasonRateLimitedAddress).Inc()
		writeJSON(w, http.StatusTooManyRequests, errorf(ReasonRateLimitedAddress, "too many requests from this address"))
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		metrics.IngestRefused.WithLabelValues(ReasonNotFound).Inc()
		writeJSON(w, http.StatusNotFound, errorf(ReasonNotFound, "no such path; POST /v1/<source>"))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// route registers POST /v1/<source>.
func (h *Handler) route(src detection.Source) {
	source := src.Name()
	h.mux.HandleFunc("/v1/"+source, func(w http.ResponseWriter, r *http.Request) {
		accepted, skipped, err := h.serve(r, src)
		if err != nil {
			n := max(accepted, 1)
			metrics.IngestedEvents.WithLabelValues(source, err.Reason).Add(float64(n))
			if err.Status >= 500 {
				logf.FromContext(r.Context()).Error(err, "ingest failed", "source", source)
			}
			writeJSON(w, err.Status, err)
			return
		}
		metrics.IngestedEvents.WithLabelValues(source, "accepted").Add(float64(accepted))
		if skipped > 0 {
			metrics.IngestedEvents.WithLabelValues(source, "skipped").Add(float64(skipped))
		}
		writeJSON(w, http.StatusAccepted, map[string]int{"accepted": accepted, "skipped": skipped})
	})
}

// serve runs one request through every check before recording anything. On
// error, accepted is the number of items the request held (for metrics).
func (h *Handler) serve(r *http.Request, src detection.Source) (int, int, *Error) {
	if r.Method != http.MethodPost {
		return 0, 0, errorf(ReasonMethod, "use POST")
	}
	cred := h.cfg.Auth.Authenticate(r)
	if cred == nil {
		return 0, 0, errorf(ReasonUnauthorized, "no or bad credential")
	}
	if !h.limiter(cred.ID()).Allow() {
		return 0, 0, errorf(ReasonRateLimited, "credential %s is over %v requests/s", cred.Name, h.cfg.Rate)
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return 0, 0, errorf(ReasonTooLarge, "body over %d bytes", h.cfg.MaxBodyBytes)
	}
	if contentTypes := src.ContentTypes(); contentTypes != nil {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if !contains(contentTypes, mt) {
			return 0, 0, errorf(ReasonUnsupportedMedia, "content type %q, want one of %v", mt, contentTypes)
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return 0, 0, errorf(ReasonTooLarge, "body over %d bytes", h.cfg.MaxBodyBytes)
		}
		return 0, 0, errorf(ReasonMalformed, "reading body: %v", err)
	}
	b, de := src.Decode(r.Header, raw)
	if de != nil {
		return 0, 0, fromDecode(de)
	}
	n := len(b.Items)
	if e := h.check(r.Context(), cred, b.Items); e != nil {
		return n, b.Skipped, e
	}
	keys := make([]string, n)
	for i := range b.Items {
		if b.Items[i].ID != "" {
			// Bound to the credential: one cannot spend another's ids.
			keys[i] = cred.ID() + "\x00" + b.Items[i].Detector + "\x00" + b.Items[i].ID
		}
	}
	if i, ok := h.replay.reserve(keys); !ok {
		return n, b.Skipped, errorf(ReasonReplayed, "id %q was already accepted", b.Items[i].ID).at(i)
	}
	accepted, skipped, e := h.accept(r.Context(), b)
	if e != nil {
		h.replay.release(keys)
		return n, b.Skipped, e
	}
	return accepted, skipped, nil
}

// accept hands the batch to detection: 503 for events only the disabled
// behavior model reads, 500 when detection fails.
func (h *Handler) accept(ctx context.Context, b detection.Batch) (int, int, *Error) {
	accepted, skipped, err := h.cfg.Detection.Accept(ctx, b)
	switch {
	case errors.Is(err, detection.ErrModelDisabled):
		return 0, 0, errorf(ReasonUnavailable, "%v", err)
	case err != nil:
		return 0, 0, errorf(ReasonInternal, "%v", err)
	}
	return accepted, skipped, nil
}

// check authorizes every item and requires its pod to exist.
func (h *Handler) check(ctx context.Context, cred *Credential, items []detection.Item) *Error {
	for i := range items {
		it := &items[i]
		if !cred.Allows(it.Detector, it.Namespace()) {
			return errorf(ReasonForbidden, "credential %s may not post for detector %q in namespace %q", cred.Name, it.Detector, it.Namespace()).at(i)
		}
		if it.Behavior != nil && !cred.Train {
			return errorf(ReasonForbidden, "credential %s may not send training input for the behaviour baselines (needs train=true)", cred.Name).at(i)
		}
	}
	// Pods repeat within a batch; look each up once.
	known := map[detection.PodKey]bool{}
	for i := range items {
		key := detection.PodKey{Namespace: items[i].Namespace(), Pod: items[i].Pod()}
		if known[key] {
			continue
		}
		err := h.cfg.Pods.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Pod}, &corev1.Pod{})
		switch {
		case apierrors.IsNotFound(err):
			return errorf(ReasonUnknownPod, "pod %s/%s not found", key.Namespace, key.Pod).at(i)
		case err != nil:
			return errorf(ReasonUnavailable, "looking up pod: %v", err)
		}
		known[key] = true
	}
	return nil
}

func (h *Handler) limiter(name string) *rate.Limiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.limiters[name]
	if !ok {
		l = rate.NewLimiter(h.cfg.Rate, h.cfg.Burst)
		h.limiters[name] = l
	}
	return l
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"code":500,"reason":"Internal","message":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
