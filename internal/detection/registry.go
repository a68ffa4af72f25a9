package detector

import (
	"fmt"
	"regexp"
	"sort"
	"sync"
)

// Detector is a named source of per-pod scores. Built-in detectors decode
// their own wire format into Signals; external models post Signals directly.
type Detector interface {
	// Name is the detector name policies weigh (behavior, falco, ...).
	Name() string
}

// named is a Detector known only by name (external models).
type named string

func (n named) Name() string { return string(n) }

// Named returns a Detector that is only a name, for external models.
func Named(name string) Detector { return named(name) }

// nameRE is the DNS-label form ThreatPolicy uses for detector names.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidName reports whether name can be weighed by a ThreatPolicy.
func ValidName(name string) bool { return len(name) <= 63 && nameRE.MatchString(name) }

// Registry holds the detectors the manager runs.
type Registry struct {
	mu        sync.RWMutex
	detectors map[string]Detector
}

// NewRegistry returns a registry holding the built-in detectors' names.
func NewRegistry() *Registry {
	r := &Registry{detectors: map[string]Detector{}}
	for _, n := range []string{Behavior, Falco, Tetragon, Alertmanager} {
		r.detectors[n] = named(n)
	}
	return r
}

// MaxDetectors bounds the registry: external names are chosen by clients.
const MaxDetectors = 256

// Register adds or replaces a detector; its name must be a DNS label.
func (r *Registry) Register(d Detector) error {
	if !ValidName(d.Name()) {
		return fmt.Errorf("detector name %q is not a DNS label", d.Name())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.detectors[d.Name()]; !ok && len(r.detectors) >= MaxDetectors {
		return fmt.Errorf("registry full: %d detectors", MaxDetectors)
	}
	r.detectors[d.Name()] = d
	return nil
}

// Get returns the detector registered under name.
func (r *Registry) Get(name string) (Detector, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.detectors[name]
	return d, ok
}

// Names lists registered detectors, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.detectors))
	for n := range r.detectors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
