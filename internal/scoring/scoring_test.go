package scoring

import (
	"fmt"
	"math"
	"testing"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
)

func TestFuse(t *testing.T) {
	weights := []securityv1alpha1.DetectorWeight{{Name: "behavior", Weight: 60}, {Name: "falco", Weight: 40}}
	misconf := Adjustment{Source: SourceMisconfiguration, Delta: 0.05, Reason: "privileged"}
	vulns := Adjustment{Source: SourceVulnerabilities, Delta: 0.08, Reason: "2 critical"}
	safe := Adjustment{Source: SourceMisconfiguration, Delta: -0.05, Reason: "restricted"}
	cases := []struct {
		name      string
		fresh     map[string]detector.Entry
		exp       []Adjustment
		want      float64
		wantTop   string
		wantDelta map[string]string
		// wantFresh is the fresh share of the weight, "fresh/total".
		wantFresh string
	}{
		{name: "weighted mean", fresh: map[string]detector.Entry{"behavior": {Score: 1}, "falco": {Score: 0.5}}, want: 0.8, wantTop: "behavior"},
		// falco alone scores 0.7 but carries 40 of the 100 weight: the result
		// says so, and policy.Corroborated keeps destructive steps out of reach.
		{name: "only fresh detectors count, and their share of the weight is reported", fresh: map[string]detector.Entry{"falco": {Score: 0.7}, "other": {Score: 1}}, want: 0.7, wantTop: "falco", wantFresh: "40/100"},
		{name: "all fresh", fresh: map[string]detector.Entry{"behavior": {Score: 1}, "falco": {Score: 0.5}}, want: 0.8, wantTop: "behavior", wantFresh: "100/100"},
		{name: "nothing fresh", fresh: nil, exp: []Adjustment{misconf}, want: 0},
		{name: "exposure never lifts a zero", fresh: map[string]detector.Entry{"falco": {Score: 0}}, exp: []Adjustment{misconf, vulns}, want: 0, wantTop: "falco"},
		{name: "exposure capped at +0.10", fresh: map[string]detector.Entry{"falco": {Score: 0.5}}, exp: []Adjustment{misconf, vulns}, want: 0.6, wantTop: "falco",
			wantDelta: map[string]string{SourceMisconfiguration: "+0.0385", SourceVulnerabilities: "+0.0615"}},
		{name: "exposure lowers", fresh: map[string]detector.Entry{"falco": {Score: 0.5}}, exp: []Adjustment{safe}, want: 0.45, wantTop: "falco",
			wantDelta: map[string]string{SourceMisconfiguration: "-0.05"}},
		{name: "clamped at 1", fresh: map[string]detector.Entry{"falco": {Score: 0.98}}, exp: []Adjustment{misconf}, want: 1, wantTop: "falco",
			wantDelta: map[string]string{SourceMisconfiguration: "+0.02"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Fuse(weights, tc.fresh, tc.exp)
			if math.Abs(r.Score-tc.want) > 1e-9 {
				t.Errorf("score = %v, want %v", r.Score, tc.want)
			}
			if got := fmt.Sprintf("%d/%d", r.FreshWeight, r.TotalWeight); tc.wantFresh != "" && got != tc.wantFresh {
				t.Errorf("fresh weight = %s, want %s", got, tc.wantFresh)
			}
			if r.Top != tc.wantTop {
				t.Errorf("top = %q, want %q", r.Top, tc.wantTop)
			}
			for _, c := range r.Breakdown {
				if c.Weight == 0 && c.Delta != tc.wantDelta[c.Source] {
					t.Errorf("%s delta = %q, want %q", c.Source, c.Delta, tc.wantDelta[c.Source])
				}
			}
			if n := len(r.Breakdown); n != r.Detectors+len(tc.wantDelta) {
				t.Errorf("breakdown has %d parts: %+v", n, r.Breakdown)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[float64]securityv1alpha1.Score{0: "0", 1: "1", 0.8: "0.8", 0.79999: "0.7999", 0.95: "0.95", 1.2: "1", -1: "0"} {
		if got := FormatScore(in); got != want {
			t.Errorf("FormatScore(%v) = %q, want %q", in, got, want)
		}
	}
	if got := FormatDelta(-0.02); got != "-0.02" {
		t.Errorf("FormatDelta = %q", got)
	}
}

func TestExplain(t *testing.T) {
	weights := []securityv1alpha1.DetectorWeight{{Name: "behavior", Weight: 60}, {Name: "falco", Weight: 40}}
	r := Fuse(weights, map[string]detector.Entry{"behavior": {Score: 0.7}, "falco": {Score: 0.9}},
		[]Adjustment{{Source: SourceMisconfiguration, Delta: 0.05}, {Source: SourceVulnerabilities, Delta: -0.02}})
	want := "behavior 0.7 (w60), falco 0.9 (w40); misconfiguration +0.05, vulnerabilities -0.02"
	if got := Explain(r); got != want {
		t.Errorf("Explain = %q, want %q", got, want)
	}
}
