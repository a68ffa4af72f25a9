package containment

import (
	"sync"
	"time"
)

// ServedKinds remembers for a while which third-party deny kinds the API
// server serves. Asked per Isolate, the RESTMapper sends a discovery
// request for every kind that is not served (a 404), holding its lock, so
// a burst of containments queued on it; the answer changes only when such
// a CRD is installed or removed.
type ServedKinds struct {
	// TTL is how long an answer is kept: a CRD installed later is used
	// from the first Isolate after it.
	TTL time.Duration

	mu      sync.Mutex
	at      time.Time
	known   bool
	flavors []denyFlavor
}

// get returns the remembered answer while fresh, else asks lookup; a
// failed lookup is not remembered.
func (c *ServedKinds) get(now time.Time, lookup func() ([]denyFlavor, error)) ([]denyFlavor, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known && now.Sub(c.at) < c.TTL && !now.Before(c.at) {
		return c.flavors, nil
	}
	flavors, err := lookup()
	if err != nil {
		return nil, err
	}
	c.flavors, c.at, c.known = flavors, now, true
	return flavors, nil
}
