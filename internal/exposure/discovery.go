package exposure

import (
	"context"
	"fmt"
	"sync"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultRecheck is how long LazyReports trusts that Trivy Operator's API is
// not served before asking discovery again.
const DefaultRecheck = 5 * time.Minute

// LazyReports reads VulnerabilityReports through Reader (the manager's
// cache) once Mapper says the API is served. Discovery happens on first use,
// not at start, so the manager starts while the API server is unreachable;
// until then reads fail and the vulnerability weight is left out. While the
// API is not served reads return the NoKindMatch error, and discovery is
// asked again only after Recheck, so Trivy installed later is picked up.
type LazyReports struct {
	Mapper  apimeta.RESTMapper
	Reader  client.Reader
	Recheck time.Duration
	// Now is time.Now unless a test sets it.
	Now func() time.Time

	mu          sync.Mutex
	served      bool
	absent      error
	absentUntil time.Time
}

var _ client.Reader = (*LazyReports)(nil)

// Get implements client.Reader.
func (l *LazyReports) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := l.discover(); err != nil {
		return err
	}
	return l.Reader.Get(ctx, key, obj, opts...)
}

// List implements client.Reader.
func (l *LazyReports) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := l.discover(); err != nil {
		return err
	}
	return l.Reader.List(ctx, list, opts...)
}

func (l *LazyReports) discover() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.served {
		return nil
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	if l.absent != nil && now().Before(l.absentUntil) {
		return l.absent
	}
	_, err := l.Mapper.RESTMapping(VulnerabilityReportGVK.GroupKind(), VulnerabilityReportGVK.Version)
	switch {
	case err == nil:
		l.served, l.absent = true, nil
		return nil
	case apimeta.IsNoMatchError(err):
		recheck := l.Recheck
		if recheck <= 0 {
			recheck = DefaultRecheck
		}
		l.absent, l.absentUntil = err, now().Add(recheck)
		return err
	default:
		// Unreachable or failing API server: ask again on the next read.
		return fmt.Errorf("discovering VulnerabilityReports: %w", err)
	}
}
