package detection

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/detection/detectiontest"
)

var (
	sample             = detectiontest.Sample
	compact            = detectiontest.Compact
	falcosidekickEvent = detectiontest.FalcosidekickEvent
)

type want struct {
	signals, behavior, skipped int
	// first signal or behaviour event
	ns, pod  string
	score    float64
	detector string
	id       string
}

func checkBatch(t *testing.T, b Batch, e *Error, w want) {
	t.Helper()
	if e != nil {
		t.Fatalf("decode error: %v", e)
	}
	var sig, beh int
	for _, it := range b.Items {
		if it.Signal != nil {
			sig++
		} else {
			beh++
		}
	}
	if sig != w.signals || beh != w.behavior || b.Skipped != w.skipped {
		t.Fatalf("signals=%d behavior=%d skipped=%d, want %d/%d/%d", sig, beh, b.Skipped, w.signals, w.behavior, w.skipped)
	}
	if len(b.Items) == 0 {
		return
	}
	it := b.Items[0]
	if it.Namespace() != w.ns || it.Pod() != w.pod || it.Detector != w.detector || it.ID != w.id {
		t.Errorf("first item %s/%s detector %q id %q, want %s/%s %q %q", it.Namespace(), it.Pod(), it.Detector, it.ID, w.ns, w.pod, w.detector, w.id)
	}
	if it.Signal != nil && it.Signal.Score != w.score {
		t.Errorf("score %v, want %v", it.Signal.Score, w.score)
	}
}

func TestDecodeFalcoSamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		want want
	}{
		{"docs-channels-critical-terminal-shell.json", want{signals: 1, ns: "default", pod: "kubecon", score: 1, detector: "falco"}},
		{"blog-kubeless-notice-na-parent-image.json", want{signals: 1, ns: "default", pod: "alpine", score: 0.5, detector: "falco"}},
		{"blog-openfaas-notice.ndjson", want{signals: 2, ns: "default", pod: "alpine", score: 0.5, detector: "falco"}},
		{"blog-ovh-k8saudit-warning.ndjson", want{skipped: 3}},
		{"docs-metrics-snapshot-internal.json", want{skipped: 1}},
		{"talon-examples-critical-terminate.json", want{signals: 1, ns: "default", pod: "test", score: 1, detector: "falco"}},
		{"falcosidekick-test-input.json", want{skipped: 1}},
		{"readme-curl-error-event.json", want{skipped: 1}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, e := DecodeFalco(sample(t, tc.file))
			checkBatch(t, b, e, tc.want)
		})
	}
}

func TestFalcoPriorities(t *testing.T) {
	for p, s := range map[string]float64{"Emergency": 1, "ALERT": 1, "Critical": 1, "Error": .9, "Warning": .7, "Notice": .5, "Informational": .2, "Debug": .2} {
		if got := FalcoScore(p); got != s {
			t.Errorf("FalcoScore(%s) = %v, want %v", p, got, s)
		}
	}
}

func TestDecodeFalcoNA(t *testing.T) {
	b, e := DecodeFalco([]byte(`{"rule":"r","priority":"Critical","output_fields":{"k8s.ns.name":"<NA>","k8s.pod.name":null}}`))
	checkBatch(t, b, e, want{skipped: 1})
}

func TestDecodeTetragonSamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		want want
	}{
		{"process_exec-1.json", want{behavior: 1, ns: "default", pod: "xwing", detector: "tetragon"}},
		{"testdata-events.ndjson", want{behavior: 3, ns: "default", pod: "tiefighter", detector: "tetragon"}},
		{"process_exec-3-host-no-pod.json", want{skipped: 1}},
		{"process_exit-1.json", want{skipped: 1}},
		{"process_kprobe-1-file-access.json", want{signals: 1, ns: "default", pod: "file-access", score: KprobeMatchScore, detector: "tetragon"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw := sample(t, tc.file)
			if filepath.Ext(tc.file) == ".json" {
				raw = compact(t, raw) // the docs print events over several lines
			}
			b, e := DecodeTetragon(raw)
			checkBatch(t, b, e, tc.want)
		})
	}
	b, _ := DecodeTetragon(compact(t, sample(t, "process_exec-1.json")))
	ex := b.Items[0].Behavior.Exec
	if ex.Binary != "/usr/bin/whoami" || ex.ParentBinary != "/bin/bash" {
		t.Errorf("exec = %+v", ex)
	}
}

func TestDecodeAlertmanagerSamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		want want
	}{
		{"firing-1.json", want{signals: 1, ns: "prometheus", pod: "prometheus-prometheus-node-exporter-xp6jv", score: 0.7, detector: "alertmanager"}},
		{"firing-3-no-version.json", want{signals: 2, ns: "t1", pod: "s2i-1-viafnz-5474c8b5b7-px7kz", score: 1, detector: "alertmanager"}},
		{"resolved-1.json", want{skipped: 1}}, // pod_name, not pod
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, e := DecodeAlertmanager(sample(t, tc.file))
			checkBatch(t, b, e, tc.want)
		})
	}
	b, e := DecodeAlertmanager([]byte(`{"version":"4","status":"resolved","alerts":[{"status":"resolved","labels":{"namespace":"a","pod":"b","severity":"critical"}},{"status":"firing","labels":{"namespace":"a","pod":"c","bulkhead_score":"0.42"}}]}`))
	checkBatch(t, b, e, want{signals: 2, ns: "a", pod: "b", score: 0, detector: "alertmanager"})
	if b.Items[1].Signal.Score != 0.42 {
		t.Errorf("bulkhead_score label: %v", b.Items[1].Signal.Score)
	}
}

func TestDecodeCloudEvents(t *testing.T) {
	structured, h, data := falcosidekickEvent(t)
	w := want{signals: 1, ns: "default", pod: "alpine", score: 0.5, detector: "falco", id: "falco.org/f7628198-3822-4c98-ac3f-71770e272a16"}
	t.Run("structured", func(t *testing.T) {
		b, e := DecodeCloudEvent(http.Header{"Content-Type": {"application/cloudevents+json"}}, structured)
		checkBatch(t, b, e, w)
	})
	t.Run("binary", func(t *testing.T) {
		b, e := DecodeCloudEvent(h, data)
		checkBatch(t, b, e, w)
	})
	t.Run("score type", func(t *testing.T) {
		b, e := DecodeCloudEvent(http.Header{"Content-Type": {"application/cloudevents+json"}},
			[]byte(`{"specversion":"1.0","type":"dev.bulkhead.score.v1","source":"m","id":"1","data":{"namespace":"n","pod":"p","detector":"my-model","score":0.9}}`))
		checkBatch(t, b, e, want{signals: 1, ns: "n", pod: "p", score: 0.9, detector: "my-model", id: "m/1"})
	})
}

func TestDecodeScoresAndSyscalls(t *testing.T) {
	b, e := DecodeScores([]byte(`[{"namespace":"n","pod":"p","detector":"m","score":1,"id":"a","evidence":{"k":[1]}},{"namespace":"n","pod":"q","detector":"m","score":0}]`))
	checkBatch(t, b, e, want{signals: 2, ns: "n", pod: "p", score: 1, detector: "m", id: "a"})
	b, e = DecodeSyscalls([]byte(`{"namespace":"n","pod":"p","container":"c","id":"x","time":"2026-01-01T00:00:00Z","calls":"open read  write"}`))
	checkBatch(t, b, e, want{behavior: 1, ns: "n", pod: "p", detector: "behavior", id: "x"})
	if got := b.Items[0].Behavior.Syscalls; len(got) != 3 || got[2] != "write" {
		t.Errorf("syscalls = %q", got)
	}
}
