package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped recording is what make demo replays without root: it must
// decode as the manager decodes, hold an attack scored at the policy's
// threshold, kernel enforcement, and a release after them.
func TestShippedRecording(t *testing.T) {
	entries, err := loadRecording(filepath.Join("testdata", "sensor-recording.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	pod, node, err := recordedTarget(entries)
	if err != nil {
		t.Fatal(err)
	}
	var attack, released, scored, enforced int
	for i, e := range entries {
		switch {
		case e.Mark == markAttack:
			attack = i
		case e.Mark == markReleased:
			released = i
		case e.Report != nil:
			if e.Report.Node != node {
				t.Errorf("entry %d from node %s, want one node (%s)", i, e.Report.Node, node)
			}
			for _, s := range e.Report.Scores {
				if s.Pod == pod && s.Score >= 0.8 && scored == 0 {
					scored = i
				}
			}
			for _, en := range e.Report.Enforcement {
				if en.Pod == pod && en.Enforced && en.ConnCut && enforced == 0 {
					enforced = i
				}
			}
		}
	}
	if !(0 < attack && attack < scored && scored < enforced && enforced < released) {
		t.Fatalf("want attack < score ≥ 0.8 < kernel enforcement < release, got entries %d, %d, %d, %d", attack, scored, enforced, released)
	}
}

func TestLoadRecordingRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"empty":      "",
		"unknown":    `{"atMs":1,"mark":"launch"}`,
		"badScore":   `{"atMs":1,"report":{"node":"n","time":"2026-01-01T00:00:00Z","heartbeat":true,"coverage":{"ready":true},"scores":[{"namespace":"a","pod":"b","score":2,"time":"2026-01-01T00:00:00Z"}]}}`,
		"extraField": `{"atMs":1,"mark":"attack","x":1}`,
	} {
		p := filepath.Join(dir, name)
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		if _, err := loadRecording(p); err == nil {
			t.Errorf("%s: accepted %q", name, strings.TrimSpace(body))
		}
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }
