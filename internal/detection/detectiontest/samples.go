// Package detectiontest gives tests the public sample payloads under
// internal/detection/testdata/samples, from any package.
package detectiontest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// SamplesDir is the folder of sample payloads.
func SamplesDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "samples")
}

// Sample reads one sample payload.
func Sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(SamplesDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Compact re-encodes a sample printed over several lines as one line.
func Compact(t testing.TB, raw []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return out
}

// FalcosidekickEvent rebuilds the Falco blog's CloudEvent in structured and
// binary mode.
func FalcosidekickEvent(t testing.TB) (structured []byte, binHeader http.Header, binBody []byte) {
	t.Helper()
	var s struct {
		Context    map[string]string `json:"context_attributes"`
		Extensions map[string]string `json:"extensions"`
		Data       json.RawMessage   `json:"data"`
	}
	if err := json.Unmarshal(Sample(t, "falcosidekick-knative-blog-sdk-rendering.json"), &s); err != nil {
		t.Fatal(err)
	}
	m := map[string]any{"data": s.Data}
	binHeader = http.Header{}
	for k, v := range s.Context {
		m[k] = v
		if k == "datacontenttype" {
			binHeader.Set("Content-Type", v)
		} else {
			binHeader.Set("Ce-"+k, v)
		}
	}
	for k, v := range s.Extensions {
		m[k] = v
		binHeader.Set("Ce-"+k, v)
	}
	structured, _ = json.Marshal(m)
	return structured, binHeader, s.Data
}
