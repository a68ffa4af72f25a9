package sensor

import (
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// ListenSuffix marks a listening socket in ConnectEvent.Protocol ("TCP-LISTEN"):
// a port the workload never listened on is novel like a new destination.
const ListenSuffix = "-LISTEN"

// MaxTrigramRepeats caps how often one trigram is repeated in its run: a
// count of c gives 1+floor(log2 c) repeats, up to this, so hot loops weigh
// more than one-offs without drowning them.
const MaxTrigramRepeats = 4

// syscallStreamSep separates a container from a trigram in the stream key.
const syscallStreamSep = "\x1fsys:"

// target is a tracked container's pod.
type target struct {
	Namespace, Pod, PodUID, Container string
}

// behaviorEvent converts a collector event; false when it carries nothing.
func behaviorEvent(t target, ev Event) (detector.BehaviorEvent, bool) {
	out := detector.BehaviorEvent{Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, Time: ev.Time}
	switch {
	case ev.Exec != nil:
		out.Exec = &detector.ExecEvent{
			Binary: ev.Exec.Binary, ParentBinary: ev.Exec.Parent,
			Arguments: strings.Join(ev.Exec.Args, " "), UID: int64(ev.Exec.UID),
		}
	case ev.Conn != nil:
		c := ev.Conn
		proto := strings.ToUpper(c.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		if c.Listen {
			proto += ListenSuffix
		}
		addr := ""
		if c.Addr.IsValid() {
			addr = c.Addr.Unmap().String()
		}
		out.Connect = &detector.ConnectEvent{Address: addr, Port: int32(c.Port), Protocol: proto}
	default:
		return out, false
	}
	return out, true
}

// syscallEvents turns one container's drained trigram counts into runs of
// system-call names. Each distinct trigram is its own stream (the Container
// field carries the trigram): the kernel's counts have no order between
// trigrams, so one shared stream would learn and score n-grams across
// trigram boundaries that depend on map order. A trigram's own stream only
// ever holds that trigram repeated, so what it learns is a function of the
// trigram alone, and a known trigram scores 0 in any pod of the workload.
func syscallEvents(t target, counts map[Trigram]uint64, name func(uint16) string, at time.Time) []detector.BehaviorEvent {
	grams := make([]Trigram, 0, len(counts))
	for g, n := range counts {
		if n > 0 {
			grams = append(grams, g)
		}
	}
	sort.Slice(grams, func(i, j int) bool {
		a, b := grams[i], grams[j]
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		if a[1] != b[1] {
			return a[1] < b[1]
		}
		return a[2] < b[2]
	})
	out := make([]detector.BehaviorEvent, 0, len(grams))
	for _, g := range grams {
		names := [3]string{syscallName(name, g[0]), syscallName(name, g[1]), syscallName(name, g[2])}
		reps := min(bits.Len64(counts[g]), MaxTrigramRepeats)
		run := make([]string, 0, 3*reps)
		for range reps {
			run = append(run, names[:]...)
		}
		out = append(out, detector.BehaviorEvent{
			Namespace: t.Namespace, Pod: t.Pod, Time: at,
			Container: t.Container + syscallStreamSep + strings.Join(names[:], ","),
			Syscalls:  run,
		})
	}
	return out
}

func syscallName(name func(uint16) string, nr uint16) string {
	if name != nil {
		if s := name(nr); s != "" {
			return s
		}
	}
	return "syscall_" + strconv.Itoa(int(nr))
}

// SyscallVocabulary is every system call name in number order (0..max), as
// the syscall model's vocabulary is seeded with it so that every node gives a
// name the same id and baselines learned on different nodes can be merged.
func SyscallVocabulary(name func(uint16) string, max uint16) []string {
	out := make([]string, 0, int(max)+1)
	seen := map[string]bool{}
	for nr := 0; nr <= int(max); nr++ {
		s := syscallName(name, uint16(nr))
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
