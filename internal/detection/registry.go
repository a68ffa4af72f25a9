package detection

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Source is one way observations reach detection: a wire format served at
// POST /v1/<Name>, decoded into items (scores, or events for the behavior
// model). Every built-in detector arrives through one; adding a source is
// one entry in BuiltinSources.
type Source interface {
	// Name is the path segment under /v1/ and the metric label.
	Name() string
	// Detectors are the built-in detector names the source's items carry;
	// none for a source that carries external models' names.
	Detectors() []string
	// ContentTypes the source accepts; nil leaves the check to Decode.
	ContentTypes() []string
	// Decode turns one request into items, or an error that changes nothing.
	Decode(header http.Header, body []byte) (Batch, *Error)
}

// BuiltinSources is the one list of Bulkhead's own sources: adding one
// (say the node sensor at /v1/sensor) is one entry here.
func BuiltinSources() []Source {
	ndjson := []string{"application/json", "application/x-ndjson"}
	return []Source{
		// External models' scores, under their own names.
		source{"scores", nil, jsonTypes, body(DecodeScores)},
		// Falco or Falcosidekick JSON, scored by priority.
		source{"falco", []string{detector.Falco}, ndjson, body(DecodeFalco)},
		// One CloudEvent: a Falco event (scored as falco) or a scores body.
		source{"cloudevents", []string{detector.Falco}, nil, DecodeCloudEvent},
		// Execs feed the behavior model; kprobe policy matches are scores.
		source{"tetragon", []string{detector.Tetragon}, append(ndjson, "application/jsonl"), body(DecodeTetragon)},
		// Webhook version 4, scored by label.
		source{"alertmanager", []string{detector.Alertmanager}, jsonTypes, body(DecodeAlertmanager)},
		// Runs of system calls for the behavior model.
		source{"syscalls", []string{detector.Behavior}, jsonTypes, body(DecodeSyscalls)},
	}
}

// source is a built-in Source.
type source struct {
	name      string
	detectors []string
	types     []string
	decode    func(http.Header, []byte) (Batch, *Error)
}

func (s source) Name() string                                      { return s.name }
func (s source) Detectors() []string                               { return s.detectors }
func (s source) ContentTypes() []string                            { return s.types }
func (s source) Decode(h http.Header, body []byte) (Batch, *Error) { return s.decode(h, body) }

// body adapts a decoder that reads only the body.
func body(decode func([]byte) (Batch, *Error)) func(http.Header, []byte) (Batch, *Error) {
	return func(_ http.Header, b []byte) (Batch, *Error) { return decode(b) }
}

// BuiltinDetectors are the detector names the sources speak for: Bulkhead's
// own detectors, under which external models may not post.
func BuiltinDetectors(sources []Source) map[string]bool {
	out := map[string]bool{}
	for _, s := range sources {
		for _, d := range s.Detectors() {
			out[d] = true
		}
	}
	return out
}

// nameRE is the DNS-label form ThreatPolicy uses for detector names.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidName reports whether name can be weighed by a ThreatPolicy.
func ValidName(name string) bool { return len(name) <= 63 && nameRE.MatchString(name) }

// MaxDetectors bounds the registry: external names are chosen by clients.
const MaxDetectors = 256

// Registry knows the detectors that exist: the built-in ones, and external
// models from their first accepted score (a policy weighing a name nobody
// has posted under is told so).
type Registry struct {
	mu    sync.RWMutex
	names map[string]bool
}

// NewRegistry returns a registry holding the built-in detectors' names.
func NewRegistry() *Registry {
	return &Registry{names: BuiltinDetectors(BuiltinSources())}
}

// Learn adds an external detector's name; it must be a DNS label.
func (r *Registry) Learn(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("detector name %q is not a DNS label", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.names[name] && len(r.names) >= MaxDetectors {
		return fmt.Errorf("registry full: %d detectors", MaxDetectors)
	}
	r.names[name] = true
	return nil
}

// Known reports whether a detector of that name exists.
func (r *Registry) Known(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.names[name]
}

// Names lists the known detectors, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.names))
	for n := range r.names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
