package detection

import (
	"net/http"
	"testing"
)

// BenchmarkDecode measures each decoder on a real sample.
func BenchmarkDecode(b *testing.B) {
	structured, _, _ := falcosidekickEvent(b)
	ceHeader := http.Header{"Content-Type": {"application/cloudevents+json"}}
	for _, bc := range []struct {
		name   string
		in     []byte
		decode func([]byte) (Batch, *Error)
	}{
		{"scores", []byte(`{"namespace":"web","pod":"shop-1","detector":"my-model","score":0.4,"id":"x"}`), DecodeScores},
		{"falco", sample(b, "docs-channels-critical-terminal-shell.json"), DecodeFalco},
		{"tetragon", sample(b, "testdata-events.ndjson"), DecodeTetragon},
		{"alertmanager", sample(b, "firing-3-no-version.json"), DecodeAlertmanager},
		{"syscalls", []byte(`{"namespace":"web","pod":"shop-1","calls":"open read write close mmap"}`), DecodeSyscalls},
		{"cloudevents", structured, func(in []byte) (Batch, *Error) { return DecodeCloudEvent(ceHeader, in) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, e := bc.decode(bc.in); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}
