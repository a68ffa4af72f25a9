package ingest

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/time/rate"

	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// maxAddresses bounds the per-address limiters kept: beyond it, idle ones
// are dropped, and if none is idle new addresses share one limiter.
const maxAddresses = 10_000

// addressLimiter rate-limits requests per client address before
// authentication, so a flood costs little and the map stays bounded.
type addressLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu       sync.Mutex
	byAddr   map[netip.Prefix]*rate.Limiter
	overflow *rate.Limiter
}

func newAddressLimiter(limit rate.Limit, burst, maxAddrs int) *addressLimiter {
	return &addressLimiter{limit: limit, burst: burst, max: maxAddrs, byAddr: map[netip.Prefix]*rate.Limiter{},
		overflow: rate.NewLimiter(limit, burst)}
}

// addressKey is the client's IPv4 address, or its IPv6 /64 (one host can
// hold a whole /64).
func addressKey(remote string) netip.Prefix {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (a *addressLimiter) allow(remote string) bool {
	key := addressKey(remote)
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.byAddr[key]
	if !ok {
		if len(a.byAddr) >= a.max {
			a.dropIdle()
		}
		if len(a.byAddr) >= a.max {
			l = a.overflow
		} else {
			l = rate.NewLimiter(a.limit, a.burst)
			a.byAddr[key] = l
		}
	}
	return l.Allow()
}

// dropIdle forgets limiters that are full again: forgetting them changes
// nothing for their address.
func (a *addressLimiter) dropIdle() {
	for k, l := range a.byAddr {
		if l.Tokens() >= float64(a.burst) {
			delete(a.byAddr, k)
		}
	}
}

// capListener bounds open connections, in total and per client address
// (same key as the rate limit): connections beyond either are closed at
// once and counted, so a flood cannot hold every slot of one address's
// neighbours nor grow the manager's memory.
type capListener struct {
	net.Listener
	max, perAddr int

	mu     sync.Mutex
	total  int
	byAddr map[netip.Prefix]int
}

// LimitConnections wraps ln with the caps; zero or less disables one.
func LimitConnections(ln net.Listener, maxConns, perAddress int) net.Listener {
	if maxConns <= 0 && perAddress <= 0 {
		return ln
	}
	return &capListener{Listener: ln, max: maxConns, perAddr: perAddress, byAddr: map[netip.Prefix]int{}}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addressKey(c.RemoteAddr().String())
		if l.take(key) {
			return &capConn{Conn: c, release: func() { l.give(key) }}, nil
		}
		metrics.IngestRefused.WithLabelValues(ReasonTooManyConnections).Inc()
		_ = c.Close()
	}
}

func (l *capListener) take(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perAddr > 0 && l.byAddr[key] >= l.perAddr) {
		return false
	}
	l.total++
	l.byAddr[key]++
	return true
}

func (l *capListener) give(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byAddr[key]--; l.byAddr[key] <= 0 {
		delete(l.byAddr, key)
	}
}

type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
