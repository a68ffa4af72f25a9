package detection

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

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
