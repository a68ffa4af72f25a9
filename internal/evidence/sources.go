package evidence

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
	"github.com/bulkhead-dev/bulkhead/internal/scoring"
)

// Bounds of what is gathered beyond the pod object. Together they keep a
// document far below MaxDocumentLen before the pod spec is counted.
const (
	MaxEvents             = 20
	MaxLogLines           = 50
	MaxLogBytes           = 16 << 10 // per container
	MaxLogTotalBytes      = 256 << 10
	MaxDetectorEvidence   = 8 << 10 // per detector, after redaction
	maxLoggedContainers   = 16
	maxEventMessageLen    = 1024
	DefaultGatherTimeout  = 2 * time.Second
	maxFusedPolicies      = 32
	maxDetectorReasonLen  = 1024
	maxContainerStatusLen = 1024
)

// ContainerState is one container's status when captured.
type ContainerState struct {
	Name         string `json:"name"`
	Init         bool   `json:"init,omitempty"`
	Ready        bool   `json:"ready"`
	RestartCount int32  `json:"restartCount"`
	State        string `json:"state,omitempty"`
	LastState    string `json:"lastState,omitempty"`
}

// PodEvent is one recent Event about the pod.
type PodEvent struct {
	Time    metav1.Time `json:"time"`
	Type    string      `json:"type,omitempty"`
	Reason  string      `json:"reason,omitempty"`
	Message string      `json:"message,omitempty"`
	Count   int32       `json:"count,omitempty"`
	Source  string      `json:"source,omitempty"`
}

// ContainerLog is the tail of one container's log, redacted.
type ContainerLog struct {
	Container string   `json:"container"`
	Lines     []string `json:"lines,omitempty"`
	// Truncated: the log had more than the lines or bytes kept.
	Truncated bool `json:"truncated,omitempty"`
	// Unavailable says why there is no log (no kubelet, not started).
	Unavailable string `json:"unavailable,omitempty"`
}

// DetectorScore is one detector's fresh score for the pod with the
// evidence it sent, redacted.
type DetectorScore struct {
	Detector string                 `json:"detector"`
	Score    securityv1alpha1.Score `json:"score"`
	Reason   string                 `json:"reason,omitempty"`
	Time     metav1.Time            `json:"time"`
	Evidence json.RawMessage        `json:"evidence,omitempty"`
	// EvidenceDropped is the size of evidence too large to keep.
	EvidenceDropped int `json:"evidenceDropped,omitempty"`
}

// FusedScore is one contributing policy's fusion of the fresh scores at
// capture time (exposure adjustments are not repeated here).
type FusedScore struct {
	Policy      string                            `json:"policy"`
	Score       securityv1alpha1.Score            `json:"score"`
	FreshWeight int64                             `json:"freshWeight"`
	TotalWeight int64                             `json:"totalWeight"`
	Breakdown   []securityv1alpha1.ScoreComponent `json:"breakdown,omitempty"`
}

// LogReader returns up to tailLines lines (limitBytes bytes) of the end of
// a container's log.
type LogReader func(ctx context.Context, namespace, pod, container string, tailLines, limitBytes int64) ([]byte, error)

// PodLogs reads logs through the API server (pods/log).
func PodLogs(pods corev1client.PodsGetter) LogReader {
	return func(ctx context.Context, namespace, pod, container string, tailLines, limitBytes int64) ([]byte, error) {
		return pods.Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{
			Container: container, TailLines: &tailLines, LimitBytes: &limitBytes, Timestamps: true,
		}).DoRaw(ctx)
	}
}

// Sources are where evidence beyond the pod object comes from. Every
// field is optional; what is missing is left out of the document.
type Sources struct {
	// Scores returns the pod's fresh scores by detector (the detection
	// Store's Fresh).
	Scores func(namespace, pod string) map[string]detector.Entry
	// Policies reads ThreatPolicies for the fused breakdown (a cache).
	Policies client.Reader
	// Events lists Events; uncached, so the manager does not watch every
	// Event in the cluster.
	Events client.Reader
	// Logs reads container logs.
	Logs LogReader
	// Timeout bounds gathering Events and logs. Default DefaultGatherTimeout.
	Timeout time.Duration
}

// AddScores records every fresh detector score with its evidence, and
// each contributing policy's fused breakdown. It reads memory and the
// cache only, so it runs at capture, before any write.
func (s *Sources) AddScores(ctx context.Context, d *Document, namespace string, reason *securityv1alpha1.QuarantineReason) {
	if s == nil || s.Scores == nil {
		return
	}
	fresh := s.Scores(namespace, d.Pod)
	for _, name := range slices.Sorted(maps.Keys(fresh)) {
		e := fresh[name]
		ds := DetectorScore{Detector: name, Score: scoring.FormatScore(e.Score), Time: metav1.NewTime(e.Time),
			Reason: kubeutil.Truncate(redactLine(e.Reason), maxDetectorReasonLen)}
		if len(e.Evidence) > 0 {
			if ev := redactJSON(e.Evidence); len(ev) <= MaxDetectorEvidence {
				ds.Evidence = ev
			} else {
				ds.EvidenceDropped = len(ev)
			}
		}
		d.Detectors = append(d.Detectors, ds)
	}
	if reason == nil || s.Policies == nil {
		return
	}
	policies := reason.Policies
	if len(policies) == 0 && reason.Policy != "" {
		policies = []string{reason.Policy}
	}
	for _, name := range policies[:min(len(policies), maxFusedPolicies)] {
		var tp securityv1alpha1.ThreatPolicy
		if err := s.Policies.Get(ctx, client.ObjectKey{Name: name}, &tp); err != nil {
			d.Notes = append(d.Notes, fmt.Sprintf("policy %s: %v", name, err))
			continue
		}
		r := scoring.Fuse(tp.Spec.Detectors, fresh, nil)
		d.Fused = append(d.Fused, FusedScore{Policy: name, Score: scoring.FormatScore(r.Score),
			FreshWeight: r.FreshWeight, TotalWeight: r.TotalWeight, Breakdown: r.Breakdown})
	}
}

// Context is Events and logs being gathered in the background.
type Context struct {
	done   chan struct{}
	events []PodEvent
	logs   []ContainerLog
	notes  []string
}

// Gather starts reading the pod's recent Events and the tail of each
// container's log, bounded by the timeout. It does not wait: containment
// goes on meanwhile, and Wait joins before the evidence is written.
func (s *Sources) Gather(ctx context.Context, pod *corev1.Pod) *Context {
	c := &Context{done: make(chan struct{})}
	if s == nil || (s.Events == nil && s.Logs == nil) {
		close(c.done)
		return c
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultGatherTimeout
	}
	pod = pod.DeepCopy()
	go func() {
		defer close(c.done)
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		logs := make(chan []ContainerLog, 1)
		go func() { logs <- s.readLogs(ctx, pod) }()
		if s.Events != nil {
			c.events, c.notes = s.readEvents(ctx, pod)
		}
		c.logs = <-logs
	}()
	return c
}

// Wait returns when gathering has finished or ctx ends, and adds what was
// gathered to the document.
func (c *Context) Wait(ctx context.Context, d *Document) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		d.Events, d.Logs = c.events, c.logs
		d.Notes = append(d.Notes, c.notes...)
	case <-ctx.Done():
		d.Notes = append(d.Notes, "events and logs: "+ctx.Err().Error())
	}
}

func (s *Sources) readEvents(ctx context.Context, pod *corev1.Pod) ([]PodEvent, []string) {
	var list corev1.EventList
	sel := fields.SelectorFromSet(fields.Set{"involvedObject.name": pod.Name, "involvedObject.kind": "Pod"})
	if err := s.Events.List(ctx, &list, client.InNamespace(pod.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, []string{"events: " + err.Error()}
	}
	items := list.Items
	if pod.UID != "" {
		items = slices.DeleteFunc(items, func(e corev1.Event) bool { return e.InvolvedObject.UID != "" && e.InvolvedObject.UID != pod.UID })
	}
	at := func(e *corev1.Event) time.Time {
		for _, t := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time} {
			if !t.IsZero() {
				return t
			}
		}
		return e.CreationTimestamp.Time
	}
	sort.SliceStable(items, func(i, j int) bool { return at(&items[i]).After(at(&items[j])) })
	var out []PodEvent
	for i := range items[:min(len(items), MaxEvents)] {
		e := &items[i]
		src := e.ReportingController
		if src == "" {
			src = e.Source.Component
		}
		out = append(out, PodEvent{Time: metav1.NewTime(at(e)), Type: e.Type, Reason: kubeutil.Truncate(e.Reason, 128),
			Message: kubeutil.Truncate(redactLine(e.Message), maxEventMessageLen), Count: e.Count, Source: kubeutil.Truncate(src, 128)})
	}
	slices.Reverse(out) // oldest first, as a timeline
	var notes []string
	if len(items) > MaxEvents {
		notes = append(notes, fmt.Sprintf("events: the latest %d of %d kept", MaxEvents, len(items)))
	}
	return out, notes
}

// readLogs reads every container's tail in parallel. A container without
// a log (not started; a node without a kubelet, as kwok's) gets a reason.
func (s *Sources) readLogs(ctx context.Context, pod *corev1.Pod) []ContainerLog {
	if s.Logs == nil {
		return nil
	}
	var names []string
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		names = append(names, c.Name)
	}
	if len(names) > maxLoggedContainers {
		names = names[:maxLoggedContainers]
	}
	if len(names) == 0 {
		return nil
	}
	limit := int64(min(MaxLogBytes, MaxLogTotalBytes/len(names)))
	out := make([]ContainerLog, len(names))
	done := make(chan struct{}, len(names))
	for i, name := range names {
		go func() {
			defer func() { done <- struct{}{} }()
			out[i] = ContainerLog{Container: name}
			if pod.Spec.NodeName == "" {
				out[i].Unavailable = "pod not scheduled"
				return
			}
			raw, err := s.Logs(ctx, pod.Namespace, pod.Name, name, MaxLogLines, limit)
			if err != nil {
				out[i].Unavailable = kubeutil.Truncate(err.Error(), 256)
				return
			}
			out[i].Lines, out[i].Truncated = tail(raw, MaxLogLines, int(limit))
			if len(out[i].Lines) == 0 {
				out[i].Unavailable = "empty"
			}
		}()
	}
	for range names {
		select {
		case <-done:
		case <-ctx.Done():
			// Readers still running write into out after we return: hand
			// back a copy with what is missing named.
			res := make([]ContainerLog, len(names))
			for i, name := range names {
				res[i] = ContainerLog{Container: name, Unavailable: "timed out"}
			}
			return res
		}
	}
	return out
}

// tail splits raw into its last n redacted lines; truncated when raw
// filled the byte limit or had more lines.
func tail(raw []byte, n, limit int) ([]string, bool) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), limit+1)
	for sc.Scan() {
		lines = append(lines, kubeutil.Truncate(redactLine(strings.TrimRight(sc.Text(), "\r")), maxContainerStatusLen))
	}
	truncated := len(raw) >= limit || len(lines) > n
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, truncated
}

// containerStates reads status of every container, init ones first.
func containerStates(pod *corev1.Pod) []ContainerState {
	var out []ContainerState
	add := func(statuses []corev1.ContainerStatus, init bool) {
		for _, cs := range statuses {
			out = append(out, ContainerState{Name: kubeutil.Truncate(cs.Name, maxNameLen), Init: init, Ready: cs.Ready,
				RestartCount: cs.RestartCount, State: describeState(cs.State), LastState: describeState(cs.LastTerminationState)})
		}
	}
	add(pod.Status.InitContainerStatuses, true)
	add(pod.Status.ContainerStatuses, false)
	if len(out) > maxImages {
		out = out[:maxImages]
	}
	return out
}

func describeState(s corev1.ContainerState) string {
	var out string
	switch {
	case s.Running != nil:
		out = "running since " + s.Running.StartedAt.UTC().Format(time.RFC3339)
	case s.Waiting != nil:
		out = strings.TrimSuffix("waiting: "+s.Waiting.Reason+" "+redactLine(s.Waiting.Message), " ")
	case s.Terminated != nil:
		t := s.Terminated
		out = fmt.Sprintf("terminated: %s, exit code %d at %s", t.Reason, t.ExitCode, t.FinishedAt.UTC().Format(time.RFC3339))
		if t.Signal != 0 {
			out += fmt.Sprintf(", signal %d", t.Signal)
		}
		if t.Message != "" {
			out += ": " + redactLine(t.Message)
		}
	}
	return kubeutil.Truncate(out, maxContainerStatusLen)
}
