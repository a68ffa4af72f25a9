package wire

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	ok := `{"node":"node-1","time":"2026-12-07T04:00:00Z","heartbeat":true,"coverage":{"ready":true},
	 "scores":[{"namespace":"web","pod":"shop-1","score":0.93,"reason":"new binary","evidence":{"findings":[]},"time":"2026-12-07T04:00:00Z"}],
	 "enforcement":[{"namespace":"web","pod":"shop-1","quarantine":"shop-1","enforced":true,"connCut":true,"time":"2026-12-07T04:00:00Z"}]}`
	r, err := Decode([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "node-1" || len(r.Scores) != 1 || r.Scores[0].Score != 0.93 || !r.Enforcement[0].ConnCut {
		t.Fatalf("decoded %+v", r)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"not json", `{`, "body"},
		{"unknown field", `{"node":"n","time":"2026-12-07T04:00:00Z","extra":1}`, "unknown field"},
		{"trailing", `{"node":"n","time":"2026-12-07T04:00:00Z"} {}`, "trailing"},
		{"bad node", `{"node":"N_1","time":"2026-12-07T04:00:00Z"}`, "node"},
		{"no time", `{"node":"n"}`, "time"},
		{"score > 1", `{"node":"n","time":"2026-12-07T04:00:00Z","scores":[{"namespace":"a","pod":"b","score":1.5,"time":"2026-12-07T04:00:00Z"}]}`, "outside [0,1]"},
		{"negative", `{"node":"n","time":"2026-12-07T04:00:00Z","scores":[{"namespace":"a","pod":"b","score":-0.1,"time":"2026-12-07T04:00:00Z"}]}`, "outside [0,1]"},
		{"bad ns", `{"node":"n","time":"2026-12-07T04:00:00Z","scores":[{"namespace":"A","pod":"b","score":0.1,"time":"2026-12-07T04:00:00Z"}]}`, "DNS label"},
		{"big evidence", `{"node":"n","time":"2026-12-07T04:00:00Z","scores":[{"namespace":"a","pod":"b","score":0.1,"time":"2026-12-07T04:00:00Z","evidence":"` + strings.Repeat("x", MaxEvidence) + `"}]}`, "evidence"},
		{"bad quarantine", `{"node":"n","time":"2026-12-07T04:00:00Z","enforcement":[{"namespace":"a","pod":"b","quarantine":"","time":"2026-12-07T04:00:00Z"}]}`, "quarantine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"node":"n","time":"2026-12-07T04:00:00Z","scores":[{"namespace":"a","pod":"b","score":0.5,"time":"2026-12-07T04:00:00Z"}]}`))
	f.Add([]byte(`{"node":"n","time":"2026-12-07T04:00:00Z","enforcement":[{"namespace":"a","pod":"b","quarantine":"q","time":"2026-12-07T04:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must satisfy the bounds the manager relies on.
		if r.Validate() != nil || len(r.Scores) > MaxScores {
			t.Fatalf("accepted an invalid report: %+v", r)
		}
		for _, s := range r.Scores {
			if !(s.Score >= 0 && s.Score <= 1) {
				t.Fatalf("score %v accepted", s.Score)
			}
		}
	})
}
