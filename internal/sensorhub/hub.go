package sensorhub

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/sensor/wire"
)

// PodNode answers which node a pod runs on (the manager's pod cache).
type PodNode func(ctx context.Context, namespace, pod string) (node string, found bool, err error)

// Rejection is a report refused as a whole, with the HTTP status to answer.
type Rejection struct {
	Status int
	Reason string
	Msg    string
	Index  int // offending item, -1 for the report
}

func (r *Rejection) Error() string { return fmt.Sprintf("%d %s: %s", r.Status, r.Reason, r.Msg) }

func reject(status int, reason string, index int, format string, args ...any) *Rejection {
	return &Rejection{Status: status, Reason: reason, Index: index, Msg: fmt.Sprintf(format, args...)}
}

// NodeState is the last thing a node's sensor said about itself.
type NodeState struct {
	Node      string
	LastSeen  time.Time
	Ready     bool
	Missing   string
	Dropped   uint64
	Enforcing int
}

// PodEnforcement is a pod's kernel enforcement as its node reported it.
type PodEnforcement struct {
	wire.Enforcement
	Node       string
	ReportedAt time.Time
}

// Hub holds what the sensors report. Safe for concurrent use.
type Hub struct {
	Pods PodNode
	now  func() time.Time

	mu          sync.Mutex
	nodes       map[string]*NodeState
	enforcement map[string]PodEnforcement // namespace/pod

	// changes wakes the Quarantine controller for a Quarantine whose kernel
	// state changed; full means the periodic recheck catches up instead.
	changes chan event.GenericEvent
}

// Changes delivers the Quarantines whose kernel enforcement changed.
func (h *Hub) Changes() <-chan event.GenericEvent { return h.changes }

func (h *Hub) notify(namespace, quarantine string) {
	q := &securityv1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: quarantine}}
	select {
	case h.changes <- event.GenericEvent{Object: q}:
	default:
	}
}

// KernelEnforcement is what the pod's node enforces for quarantine, in the
// Quarantine's status form.
func (h *Hub) KernelEnforcement(namespace, pod, quarantine string) (securityv1alpha1.KernelEnforcement, bool) {
	e, ok := h.Enforcement(namespace, pod)
	if !ok || e.Quarantine != quarantine {
		return securityv1alpha1.KernelEnforcement{}, false
	}
	return securityv1alpha1.KernelEnforcement{
		Pod: pod, Node: e.Node, Enforced: e.Enforced, ConnectionsCut: e.ConnCut,
		SocketsDestroyed: int32(min(e.SocketsDestroyed, math.MaxInt32)), Method: e.Method, Message: e.Reason,
		ReportedAt: metav1.NewTime(e.ReportedAt.Truncate(time.Second)),
	}, true
}

// NewHub returns an empty hub.
func NewHub(pods PodNode) *Hub {
	return &Hub{Pods: pods, now: time.Now, nodes: map[string]*NodeState{}, enforcement: map[string]PodEnforcement{},
		changes: make(chan event.GenericEvent, 1024)}
}

// Accept checks a validated report against the sensor's identity and the
// pods' placement, records its heartbeat and enforcement state, and returns
// the behavior signals to record. A sensor speaks only for its own node and
// only about pods scheduled there; one bad item refuses the whole report.
func (h *Hub) Accept(ctx context.Context, id Identity, r wire.Report) ([]detector.Signal, *Rejection) {
	rej := h.check(ctx, id, r)
	if rej != nil {
		metrics.SensorReportsRejected.WithLabelValues(rej.Reason).Inc()
		return nil, rej
	}
	now := h.now()
	h.mu.Lock()
	st := h.nodes[r.Node]
	if st == nil {
		st = &NodeState{Node: r.Node}
		h.nodes[r.Node] = st
	}
	st.LastSeen, st.Ready, st.Missing, st.Dropped = now, r.Coverage.Ready, r.Coverage.Missing, r.Dropped
	// The report is the node's whole enforcement state: forget its pods
	// that are no longer listed.
	old := map[string]PodEnforcement{}
	for k, e := range h.enforcement {
		if e.Node == r.Node {
			old[k] = e
			delete(h.enforcement, k)
		}
	}
	type qref struct{ ns, name string }
	var changed []qref
	for _, e := range r.Enforcement {
		k := e.Namespace + "/" + e.Pod
		prev, had := old[k]
		delete(old, k)
		if !had || !sameState(prev.Enforcement, e) {
			changed = append(changed, qref{e.Namespace, e.Quarantine})
			h.enforcement[k] = PodEnforcement{Enforcement: e, Node: r.Node, ReportedAt: now}
		} else {
			// Unchanged: keep the first report time so status is not
			// rewritten on every heartbeat.
			h.enforcement[k] = prev
		}
	}
	for _, e := range old {
		changed = append(changed, qref{e.Namespace, e.Quarantine})
	}
	st.Enforcing = len(r.Enforcement)
	h.mu.Unlock()
	for _, q := range changed {
		h.notify(q.ns, q.name)
	}

	metrics.SensorLastHeartbeat.WithLabelValues(r.Node).Set(float64(now.Unix()))
	ready := 0.0
	if r.Coverage.Ready {
		ready = 1
	}
	metrics.SensorBPFReady.WithLabelValues(r.Node).Set(ready)
	metrics.SensorDroppedScores.WithLabelValues(r.Node).Set(float64(r.Dropped))

	sigs := make([]detector.Signal, 0, len(r.Scores))
	for _, s := range r.Scores {
		sig := detector.Signal{
			Namespace: s.Namespace, Pod: s.Pod, Detector: detector.Behavior,
			Score: s.Score, Reason: s.Reason, Evidence: s.Evidence, Time: s.Time,
		}
		if s.ID != "" {
			// Replay ids are per node: one sensor cannot burn another's.
			sig.ID = "sensor/" + r.Node + "/" + s.ID
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}

func (h *Hub) check(ctx context.Context, id Identity, r wire.Report) *Rejection {
	if id.Node == "" {
		return reject(http.StatusForbidden, "Forbidden", -1, "the token is not bound to a pod on a node: mount a projected ServiceAccount token with audience %s", Audience)
	}
	if r.Node != id.Node {
		return reject(http.StatusForbidden, "Forbidden", -1, "report for node %q from the sensor of node %q", r.Node, id.Node)
	}
	check := func(i int, ns, pod string) *Rejection {
		node, found, err := h.Pods(ctx, ns, pod)
		switch {
		case err != nil:
			return reject(http.StatusServiceUnavailable, "Unavailable", i, "looking up pod %s/%s: %v", ns, pod, err)
		case !found:
			return reject(http.StatusUnprocessableEntity, "UnknownPod", i, "pod %s/%s does not exist", ns, pod)
		case node != r.Node:
			return reject(http.StatusForbidden, "Forbidden", i, "pod %s/%s runs on node %q, not %q", ns, pod, node, r.Node)
		}
		return nil
	}
	for i, s := range r.Scores {
		if rej := check(i, s.Namespace, s.Pod); rej != nil {
			return rej
		}
	}
	for i, e := range r.Enforcement {
		if rej := check(i, e.Namespace, e.Pod); rej != nil {
			return rej
		}
	}
	return nil
}

func sameState(a, b wire.Enforcement) bool {
	return a.Quarantine == b.Quarantine && a.Enforced == b.Enforced && a.ConnCut == b.ConnCut &&
		a.SocketsDestroyed == b.SocketsDestroyed && a.Method == b.Method && a.Reason == b.Reason
}

// Audience is what a sensor's token must be issued for.
const Audience = wire.Audience

// Enforcement returns the kernel state a node reported for the pod.
func (h *Hub) Enforcement(namespace, pod string) (PodEnforcement, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.enforcement[namespace+"/"+pod]
	return e, ok
}

// Nodes returns every node's last report, sorted by name.
func (h *Hub) Nodes() []NodeState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]NodeState, 0, len(h.nodes))
	for _, s := range h.nodes {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Uncovered lists nodes whose sensor is silent for longer than silence or
// says it cannot observe (no BPF): nodes without behaviour coverage.
func (h *Hub) Uncovered(silence time.Duration) []NodeState {
	cut := h.now().Add(-silence)
	var out []NodeState
	for _, s := range h.Nodes() {
		if !s.Ready || s.LastSeen.Before(cut) {
			out = append(out, s)
		}
	}
	return out
}
