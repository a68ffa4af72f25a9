package behavior

import (
	"fmt"
	"path"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Set is a bounded set of strings seen during learning, kept as hashes:
// evidence quotes the event, never the set, so the strings need not be kept,
// and hashes merge across nodes and shrink to a stored size (Drop) with the
// only cost a rare false "seen", never a false alarm.
type Set struct {
	Cap   int
	Drop  uint8 // low hash bits dropped to fit the stored size; 64 = saturated (everything seen)
	Items map[uint64]struct{}
}

// NewSet returns an empty set holding at most cap items.
func NewSet(cap int) Set { return Set{Cap: cap, Items: map[uint64]struct{}{}} }

func (s *Set) key(x string) uint64 { return fnv64a(x) >> s.Drop }

// Add records s unless the set is full.
func (s *Set) Add(x string) {
	if len(s.Items) < s.Cap && s.Drop < 64 {
		s.Items[s.key(x)] = struct{}{}
	}
}

// Has reports whether x was seen.
func (s *Set) Has(x string) bool {
	if s.Drop >= 64 {
		return true
	}
	_, ok := s.Items[s.key(x)]
	return ok
}

// shrink drops d more hash bits (saturating at 64).
func (s *Set) shrink(d uint8) {
	drop := min(int(s.Drop)+int(d), 64)
	if drop >= 64 {
		s.Drop, s.Items = 64, map[uint64]struct{}{}
		return
	}
	items := make(map[uint64]struct{}, len(s.Items))
	for k := range s.Items {
		items[k>>(uint8(drop)-s.Drop)] = struct{}{}
	}
	s.Drop, s.Items = uint8(drop), items
}

// merge adds o's items at the coarser of the two hash widths. The union may
// exceed Cap: dropping what another node learned would raise false alarms.
func (s *Set) merge(o *Set) {
	if o.Drop > s.Drop {
		s.shrink(o.Drop - s.Drop)
	}
	if s.Drop >= 64 {
		return
	}
	for k := range o.Items {
		s.Items[k>>(s.Drop-o.Drop)] = struct{}{}
	}
	s.Cap = max(s.Cap, o.Cap)
}

// Exec is process-exec novelty: binaries, parent->binary edges and argument
// shapes never seen for the workload.
type Exec struct {
	Binaries, Edges, Shapes Set
}

// NewExec returns an empty exec model holding at most cap items per kind.
func NewExec(cap int) *Exec {
	return &Exec{Binaries: NewSet(cap), Edges: NewSet(cap), Shapes: NewSet(cap)}
}

func edge(e *detector.ExecEvent) string { return e.ParentBinary + ">" + e.Binary }

// ArgShape abstracts an argument string so that values (numbers, hashes,
// paths under /tmp) do not count as novelty while new flags or argument
// counts do: "ls -l /tmp/x12" -> "ls -l /tmp/*".
func ArgShape(binary, args string) string {
	f := strings.Fields(args)
	out := make([]string, 0, len(f)+1)
	out = append(out, path.Base(binary))
	for _, a := range f {
		switch {
		case strings.HasPrefix(a, "-"):
			if i := strings.IndexByte(a, '='); i > 0 {
				a = a[:i] + "=*"
			}
			out = append(out, a)
		case strings.HasPrefix(a, "/"):
			out = append(out, path.Dir(a)+"/*")
		case strings.ContainsAny(a, "0123456789"):
			out = append(out, "#")
		default:
			out = append(out, "$")
		}
	}
	return strings.Join(out, " ")
}

// Learn records an exec.
func (x *Exec) Learn(e *detector.ExecEvent) {
	x.Binaries.Add(e.Binary)
	x.Edges.Add(edge(e))
	x.Shapes.Add(ArgShape(e.Binary, e.Arguments))
}

// Score is 1 for a new binary, 0.8 for a known binary under a new parent,
// 0.5 for a new argument shape, else 0; with the reason.
func (x *Exec) Score(e *detector.ExecEvent) (float64, string) {
	switch {
	case !x.Binaries.Has(e.Binary):
		return 1, fmt.Sprintf("new binary %s spawned by %s", e.Binary, e.ParentBinary)
	case !x.Edges.Has(edge(e)):
		return 0.8, fmt.Sprintf("%s spawned by new parent %s", e.Binary, e.ParentBinary)
	case !x.Shapes.Has(ArgShape(e.Binary, e.Arguments)):
		return 0.5, fmt.Sprintf("%s run with new argument shape %q", e.Binary, ArgShape(e.Binary, e.Arguments))
	}
	return 0, ""
}

// Net is network-destination novelty.
type Net struct {
	Dests, Ports Set
}

// NewNet returns an empty destination model holding at most cap items per kind.
func NewNet(cap int) *Net { return &Net{Dests: NewSet(cap), Ports: NewSet(cap)} }

func port(c *detector.ConnectEvent) string {
	return fmt.Sprintf("%s/%d", strings.ToUpper(c.Protocol), c.Port)
}
func dest(c *detector.ConnectEvent) string { return c.Address + ":" + port(c) }

// Learn records a connection.
func (n *Net) Learn(c *detector.ConnectEvent) {
	n.Dests.Add(dest(c))
	n.Ports.Add(port(c))
}

// Score is 1 for a new port, 0.7 for a new address on a known port, else 0.
func (n *Net) Score(c *detector.ConnectEvent) (float64, string) {
	switch {
	case !n.Ports.Has(port(c)):
		return 1, "connection to new port " + dest(c)
	case !n.Dests.Has(dest(c)):
		return 0.7, "connection to new destination " + dest(c)
	}
	return 0, ""
}
