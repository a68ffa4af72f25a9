package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

// Item is one decoded observation: a score, or a behavioural event for the
// built-in model.
type Item struct {
	// Detector is the name the credential must be allowed to speak for.
	Detector string
	Signal   *detector.Signal
	Behavior *detector.BehaviorEvent
	// ID deduplicates replays; empty when the source has none.
	ID string
}

// Namespace and Pod of the item.
func (it *Item) Namespace() string {
	if it.Signal != nil {
		return it.Signal.Namespace
	}
	return it.Behavior.Namespace
}

// Pod the item is about.
func (it *Item) Pod() string {
	if it.Signal != nil {
		return it.Signal.Pod
	}
	return it.Behavior.Pod
}

// Batch is one request's content.
type Batch struct {
	Items []Item
	// Skipped counts events Bulkhead does not score: no pod (host or audit
	// events), Falco's own metrics, process exits.
	Skipped int
}

const maxIDLen = 253

// decodeOneOrMany decodes one JSON object or an array of them, strictly.
func decodeOneOrMany[T any](body []byte) ([]T, *Error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errorf(ReasonMalformed, "empty body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var out []T
	if body[0] == '[' {
		if err := dec.Decode(&out); err != nil {
			return nil, malformed(err)
		}
		if len(out) == 0 {
			return nil, errorf(ReasonMalformed, "empty batch")
		}
	} else {
		var one T
		if err := dec.Decode(&one); err != nil {
			return nil, malformed(err)
		}
		out = []T{one}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errorf(ReasonMalformed, "trailing data after the JSON value")
	}
	return out, nil
}

func malformed(err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return errorf(ReasonMalformed, "field %q: wrong type %s, want %s", te.Field, te.Value, te.Type)
	}
	return errorf(ReasonMalformed, "malformed JSON: %v", err)
}

// scoreIn is the wire form of POST /v1/scores.
type scoreIn struct {
	Namespace string          `json:"namespace"`
	Pod       string          `json:"pod"`
	Detector  string          `json:"detector"`
	Score     *float64        `json:"score"`
	Reason    string          `json:"reason"`
	Evidence  json.RawMessage `json:"evidence"`
	ID        string          `json:"id"`
	Time      *time.Time      `json:"time"`
}

// DecodeScores decodes POST /v1/scores: one object or a batch.
func DecodeScores(body []byte) (Batch, *Error) {
	in, e := decodeOneOrMany[scoreIn](body)
	if e != nil {
		return Batch{}, e
	}
	b := Batch{Items: make([]Item, 0, len(in))}
	for i := range in {
		s := &in[i]
		if e := validateScore(s); e != nil {
			return Batch{}, e.at(i)
		}
		sig := &detector.Signal{Namespace: s.Namespace, Pod: s.Pod, Detector: s.Detector, Score: *s.Score,
			Reason: s.Reason, Evidence: s.Evidence, ID: s.ID}
		if s.Time != nil {
			sig.Time = *s.Time
		}
		b.Items = append(b.Items, Item{Detector: s.Detector, Signal: sig, ID: s.ID})
	}
	return b, nil
}

func validateScore(s *scoreIn) *Error {
	switch {
	case s.Namespace == "" || s.Pod == "":
		return errorf(ReasonMalformed, "namespace and pod are required")
	case !detector.ValidName(s.Detector):
		return errorf(ReasonMalformed, "detector %q is not a DNS label", s.Detector)
	case s.Score == nil:
		return errorf(ReasonMalformed, "score is required")
	case math.IsNaN(*s.Score):
		return errorf(ReasonMalformed, "score is NaN")
	case *s.Score < 0 || *s.Score > 1:
		return errorf(ReasonOutOfRange, "score %v is outside [0,1]", *s.Score)
	case len(s.ID) > maxIDLen:
		return errorf(ReasonMalformed, "id longer than %d characters", maxIDLen)
	case len(s.Reason) > 1024:
		return errorf(ReasonMalformed, "reason longer than 1024 characters")
	}
	return nil
}

// falcoEvent is Falco's JSON output, and Falcosidekick's (which adds uuid).
type falcoEvent struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         string         `json:"time"`
	Source       string         `json:"source"`
	OutputFields map[string]any `json:"output_fields"`
}

// FalcoScore maps a Falco priority to a score.
func FalcoScore(priority string) float64 {
	switch strings.ToLower(priority) {
	case "emergency", "alert", "critical":
		return 1.0
	case "error":
		return 0.9
	case "warning":
		return 0.7
	case "notice":
		return 0.5
	}
	return 0.2
}

// DecodeFalco decodes Falco or Falcosidekick JSON: one event, or several one
// after another (newline-delimited, as Falco's file and stdout outputs write).
func DecodeFalco(body []byte) (Batch, *Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var b Batch
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			if i == 0 {
				return Batch{}, errorf(ReasonMalformed, "empty body")
			}
			return b, nil
		} else if err != nil {
			return Batch{}, malformed(err).at(i)
		}
		it, ok, e := falcoItem(raw)
		if e != nil {
			return Batch{}, e.at(i)
		}
		if !ok {
			b.Skipped++
			continue
		}
		b.Items = append(b.Items, it)
	}
}

func falcoItem(raw json.RawMessage) (Item, bool, *Error) {
	var ev falcoEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Item{}, false, malformed(err)
	}
	if ev.Rule == "" || ev.Priority == "" {
		return Item{}, false, errorf(ReasonMalformed, "a Falco event needs rule and priority")
	}
	if len(ev.UUID) > maxIDLen {
		return Item{}, false, errorf(ReasonMalformed, "uuid longer than %d characters", maxIDLen)
	}
	ns, pod := falcoField(ev.OutputFields, "k8s.ns.name"), falcoField(ev.OutputFields, "k8s.pod.name")
	if ns == "" || pod == "" {
		// Host, audit and internal events name no pod.
		return Item{}, false, nil
	}
	sig := &detector.Signal{Namespace: ns, Pod: pod, Detector: detector.Falco, Score: FalcoScore(ev.Priority),
		Reason: ev.Rule + ": " + ev.Output, Evidence: raw, ID: ev.UUID}
	if ev.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ev.Time)
		if err != nil {
			return Item{}, false, errorf(ReasonMalformed, "time %q is not RFC 3339", ev.Time)
		}
		sig.Time = t
	}
	return Item{Detector: detector.Falco, Signal: sig, ID: ev.UUID}, true, nil
}

// falcoField reads a string output field; Falco writes a missing one as null
// (or "<NA>" in older text).
func falcoField(f map[string]any, key string) string {
	s, _ := f[key].(string)
	if s == "<NA>" {
		return ""
	}
	return s
}

// alertmanagerWebhook is Alertmanager's webhook payload, version 4.
type alertmanagerWebhook struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		Fingerprint string            `json:"fingerprint"`
	} `json:"alerts"`
}

// ScoreLabel on an alert sets its score directly.
const ScoreLabel = "bulkhead_score"

// DecodeAlertmanager decodes an Alertmanager webhook (version 4).
func DecodeAlertmanager(body []byte) (Batch, *Error) {
	var wh alertmanagerWebhook
	if err := json.Unmarshal(body, &wh); err != nil {
		return Batch{}, malformed(err)
	}
	if wh.Version != "" && wh.Version != "4" {
		return Batch{}, errorf(ReasonMalformed, "webhook version %q, want 4", wh.Version)
	}
	if wh.Alerts == nil {
		return Batch{}, errorf(ReasonMalformed, "alerts is required")
	}
	var b Batch
	for i, a := range wh.Alerts {
		ns, pod := a.Labels["namespace"], a.Labels["pod"]
		if ns == "" || pod == "" {
			b.Skipped++
			continue
		}
		score, e := alertScore(a.Status, a.Labels)
		if e != nil {
			return Batch{}, e.at(i)
		}
		reason := a.Labels["alertname"]
		if s := a.Annotations["summary"]; s != "" {
			reason += ": " + s
		}
		ev, _ := json.Marshal(map[string]any{"labels": a.Labels, "fingerprint": a.Fingerprint, "status": a.Status})
		// Alertmanager repeats notifications on purpose: no replay id, and
		// receipt time, since the alert is current when it arrives.
		b.Items = append(b.Items, Item{Detector: detector.Alertmanager, Signal: &detector.Signal{
			Namespace: ns, Pod: pod, Detector: detector.Alertmanager, Score: score, Reason: reason, Evidence: ev,
		}})
	}
	return b, nil
}

func alertScore(status string, labels map[string]string) (float64, *Error) {
	if status == "resolved" {
		return 0, nil
	}
	if v, ok := labels[ScoreLabel]; ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			return 0, errorf(ReasonMalformed, "label %s=%q is not a number", ScoreLabel, v)
		}
		if f < 0 || f > 1 {
			return 0, errorf(ReasonOutOfRange, "label %s=%v is outside [0,1]", ScoreLabel, f)
		}
		return f, nil
	}
	switch labels["severity"] {
	case "critical":
		return 1.0, nil
	case "warning":
		return 0.7, nil
	}
	return 0.3, nil
}

// tetragonProcess is the part of Tetragon's process record Bulkhead reads.
type tetragonProcess struct {
	Binary    string `json:"binary"`
	Arguments string `json:"arguments"`
	UID       *int64 `json:"uid"`
	Pod       *struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Container *struct {
			Name string `json:"name"`
		} `json:"container"`
	} `json:"pod"`
}

type tetragonEvent struct {
	ProcessExec *struct {
		Process tetragonProcess  `json:"process"`
		Parent  *tetragonProcess `json:"parent"`
	} `json:"process_exec"`
	ProcessKprobe *struct {
		Process      tetragonProcess `json:"process"`
		FunctionName string          `json:"function_name"`
		PolicyName   string          `json:"policy_name"`
		Action       string          `json:"action"`
	} `json:"process_kprobe"`
	Time *time.Time `json:"time"`
}

// Tetragon kprobe scores: a policy match, and one the policy enforced.
const (
	KprobeMatchScore   = 0.8
	KprobeEnforceScore = 1.0
)

// DecodeTetragon decodes Tetragon's JSON export, one event a line.
// process_exec feeds the behavior model; kprobe events matching a tracing
// policy become tetragon scores; the rest is skipped.
func DecodeTetragon(body []byte) (Batch, *Error) {
	var b Batch
	lines := 0
	for i, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		lines++
		var ev tetragonEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return Batch{}, malformed(err).at(i)
		}
		if it, ok := tetragonItem(&ev, line); ok {
			b.Items = append(b.Items, it)
		} else {
			b.Skipped++
		}
	}
	if lines == 0 {
		return Batch{}, errorf(ReasonMalformed, "empty body")
	}
	return b, nil
}

func tetragonItem(ev *tetragonEvent, raw []byte) (Item, bool) {
	var t time.Time
	if ev.Time != nil {
		t = *ev.Time
	}
	switch {
	case ev.ProcessExec != nil && ev.ProcessExec.Process.Pod != nil:
		p := &ev.ProcessExec.Process
		be := &detector.BehaviorEvent{Namespace: p.Pod.Namespace, Pod: p.Pod.Name, Time: t,
			Exec: &detector.ExecEvent{Binary: p.Binary, Arguments: p.Arguments}}
		if p.Pod.Container != nil {
			be.Container = p.Pod.Container.Name
		}
		if p.UID != nil {
			be.Exec.UID = *p.UID
		}
		if ev.ProcessExec.Parent != nil {
			be.Exec.ParentBinary = ev.ProcessExec.Parent.Binary
		}
		if be.Namespace == "" || be.Pod == "" {
			return Item{}, false
		}
		return Item{Detector: detector.Tetragon, Behavior: be}, true
	case ev.ProcessKprobe != nil && ev.ProcessKprobe.PolicyName != "" && ev.ProcessKprobe.Process.Pod != nil:
		k := ev.ProcessKprobe
		if k.Process.Pod.Namespace == "" || k.Process.Pod.Name == "" {
			return Item{}, false
		}
		score := KprobeMatchScore
		switch k.Action {
		case "KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_OVERRIDE", "KPROBE_ACTION_NOTIFYENFORCER":
			score = KprobeEnforceScore
		}
		return Item{Detector: detector.Tetragon, Signal: &detector.Signal{
			Namespace: k.Process.Pod.Namespace, Pod: k.Process.Pod.Name, Detector: detector.Tetragon, Score: score,
			Reason: "policy " + k.PolicyName + ": " + k.FunctionName + " by " + k.Process.Binary, Evidence: raw, Time: t,
		}}, true
	}
	return Item{}, false
}

// syscallsIn is the compact syscall-batch format of POST /v1/syscalls.
type syscallsIn struct {
	Namespace string     `json:"namespace"`
	Pod       string     `json:"pod"`
	Container string     `json:"container"`
	ID        string     `json:"id"`
	Time      *time.Time `json:"time"`
	Calls     string     `json:"calls"`
}

// DecodeSyscalls decodes POST /v1/syscalls: one object or an array, each a
// run of system call names separated by spaces.
func DecodeSyscalls(body []byte) (Batch, *Error) {
	in, e := decodeOneOrMany[syscallsIn](body)
	if e != nil {
		return Batch{}, e
	}
	b := Batch{Items: make([]Item, 0, len(in))}
	for i := range in {
		s := &in[i]
		calls := strings.Fields(s.Calls)
		switch {
		case s.Namespace == "" || s.Pod == "":
			return Batch{}, errorf(ReasonMalformed, "namespace and pod are required").at(i)
		case len(calls) == 0:
			return Batch{}, errorf(ReasonMalformed, "calls is empty").at(i)
		case len(s.ID) > maxIDLen:
			return Batch{}, errorf(ReasonMalformed, "id longer than %d characters", maxIDLen).at(i)
		}
		be := &detector.BehaviorEvent{Namespace: s.Namespace, Pod: s.Pod, Container: s.Container, Syscalls: calls}
		if s.Time != nil {
			be.Time = *s.Time
		}
		b.Items = append(b.Items, Item{Detector: detector.Behavior, Behavior: be, ID: s.ID})
	}
	return b, nil
}
