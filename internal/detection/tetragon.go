package detection

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

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
