package detection

import (
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// seed adds every sample whose name matches one of patterns.
func seed(f *testing.F, patterns ...string) {
	f.Helper()
	for _, p := range patterns {
		files, err := filepath.Glob(filepath.Join("testdata", "samples", p))
		if err != nil || len(files) == 0 {
			f.Fatalf("no samples match %s", p)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// invariants every decoder keeps, whatever the input.
func invariants(t *testing.T, b Batch, e *Error) {
	if e != nil {
		// Ingest answers each of these with a 4xx (TestDecodeReasonsAre4xx).
		if e.Reason != ReasonMalformed && e.Reason != ReasonUnsupportedMedia && e.Reason != ReasonOutOfRange {
			t.Fatalf("error %+v is not a client error with a reason", e)
		}
		if len(b.Items) != 0 {
			t.Fatalf("error with %d items", len(b.Items))
		}
		return
	}
	for _, it := range b.Items {
		if it.Namespace() == "" || it.Pod() == "" || it.Detector == "" {
			t.Fatalf("item without pod or detector: %+v", it)
		}
		if s := it.Signal; s != nil && (math.IsNaN(s.Score) || s.Score < 0 || s.Score > 1) {
			t.Fatalf("score %v out of range", s.Score)
		}
		if len(it.ID) > 2*maxIDLen+1 {
			t.Fatalf("id of %d bytes", len(it.ID))
		}
	}
}

func FuzzDecodeScores(f *testing.F) {
	f.Add([]byte(`[{"namespace":"n","pod":"p","detector":"m","score":0.5,"id":"1","evidence":{"a":1},"time":"2026-01-01T00:00:00Z"}]`))
	f.Add([]byte(`{"namespace":"n","pod":"p","detector":"m","score":1e400}`))
	f.Fuzz(func(t *testing.T, in []byte) { b, e := DecodeScores(in); invariants(t, b, e) })
}

func FuzzDecodeFalco(f *testing.F) {
	seed(f, "*critical*.json", "blog-*", "falcosidekick-test-input.json", "readme-curl-error-event.json", "docs-metrics-snapshot-internal.json")
	f.Fuzz(func(t *testing.T, in []byte) { b, e := DecodeFalco(in); invariants(t, b, e) })
}

func FuzzDecodeTetragon(f *testing.F) {
	seed(f, "process_*.json", "testdata-events.ndjson")
	f.Fuzz(func(t *testing.T, in []byte) { b, e := DecodeTetragon(in); invariants(t, b, e) })
}

func FuzzDecodeAlertmanager(f *testing.F) {
	seed(f, "firing-*.json", "resolved-*.json")
	f.Fuzz(func(t *testing.T, in []byte) { b, e := DecodeAlertmanager(in); invariants(t, b, e) })
}

func FuzzDecodeSyscalls(f *testing.F) {
	f.Add([]byte(`{"namespace":"n","pod":"p","container":"c","id":"1","time":"2026-01-01T00:00:00Z","calls":"open read write close"}`))
	f.Add([]byte(`[{"namespace":"n","pod":"p","calls":"execve"},{"namespace":"n","pod":"q","calls":"socket connect"}]`))
	f.Fuzz(func(t *testing.T, in []byte) { b, e := DecodeSyscalls(in); invariants(t, b, e) })
}

// FuzzDecodeCloudEvent fuzzes structured mode, and binary mode with the
// fuzzed bytes as data under the Falcosidekick sample's headers.
func FuzzDecodeCloudEvent(f *testing.F) {
	structured, binHeader, data := falcosidekickEvent(f)
	f.Add(structured, false)
	f.Add(data, true)
	f.Add([]byte(`{"specversion":"1.0","type":"dev.bulkhead.score.v1","source":"m","id":"1","data":{"namespace":"n","pod":"p","detector":"my-model","score":0.9}}`), false)
	f.Fuzz(func(t *testing.T, in []byte, binary bool) {
		h := http.Header{"Content-Type": {"application/cloudevents+json"}}
		if binary {
			h = binHeader.Clone()
		}
		b, e := DecodeCloudEvent(h, in)
		invariants(t, b, e)
	})
}
