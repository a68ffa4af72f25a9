// Package scoring fuses detector scores by a policy's weights and moves the
// result by exposure, explaining every part.
package scoring

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// MaxExposure is the most exposure may move a score, either way.
const MaxExposure = 0.10

// Exposure sources, as they appear in a breakdown.
const (
	SourceMisconfiguration = "misconfiguration"
	SourceVulnerabilities  = "vulnerabilities"
)

// Adjustment is one exposure finding: how far it would move the score.
type Adjustment struct {
	Source string
	Delta  float64
	Reason string
}

// Result is an effective score and how it was reached.
type Result struct {
	// Score is the effective score in [0,1].
	Score float64
	// Base is the weighted mean before exposure.
	Base float64
	// Detectors counts the policy's detectors with a fresh score.
	Detectors int
	// Top is the detector that contributed most (weight × score).
	Top string
	// Breakdown lists each detector and each exposure adjustment applied.
	Breakdown []securityv1alpha1.ScoreComponent
}

// Fuse computes Σ wᵢ·sᵢ / Σ wᵢ over weights' detectors present in fresh, then
// applies exposure clamped to ±MaxExposure. Exposure never lifts a zero.
func Fuse(weights []securityv1alpha1.DetectorWeight, fresh map[string]detector.Entry, exposure []Adjustment) Result {
	var r Result
	var sum, wsum, top float64
	for _, w := range weights {
		e, ok := fresh[w.Name]
		if !ok || w.Weight <= 0 {
			continue
		}
		r.Detectors++
		c := float64(w.Weight) * e.Score
		sum += c
		wsum += float64(w.Weight)
		if c > top || r.Top == "" {
			top, r.Top = c, w.Name
		}
		r.Breakdown = append(r.Breakdown, securityv1alpha1.ScoreComponent{
			Source: w.Name, Score: FormatScore(e.Score), Weight: w.Weight, Reason: kubeutil.Truncate(e.Reason, 1024),
		})
	}
	if wsum > 0 {
		r.Base = sum / wsum
	}
	r.Score = r.Base
	if r.Base == 0 {
		return r
	}
	var raw float64
	for _, a := range exposure {
		raw += a.Delta
	}
	total := clamp(raw, -MaxExposure, MaxExposure)
	r.Score = clamp(r.Base+total, 0, 1)
	applied := r.Score - r.Base
	for _, a := range exposure {
		d := 0.0
		if raw != 0 {
			// Attribute what was actually applied in proportion to each finding.
			d = a.Delta * applied / raw
		}
		r.Breakdown = append(r.Breakdown, securityv1alpha1.ScoreComponent{
			Source: a.Source, Delta: FormatDelta(d), Reason: kubeutil.Truncate(a.Reason, 1024),
		})
	}
	sort.SliceStable(r.Breakdown, func(i, j int) bool {
		// Detectors first (they carry a weight), then exposure.
		return r.Breakdown[i].Weight > 0 && r.Breakdown[j].Weight == 0
	})
	return r
}

// Explain writes the breakdown on one line, such as
// "falco 0.9 (w40), behavior 0.7 (w60); misconfiguration +0.05".
func Explain(r Result) string {
	var detectors, exposure []string
	for _, c := range r.Breakdown {
		if c.Weight > 0 {
			detectors = append(detectors, fmt.Sprintf("%s %s (w%d)", c.Source, c.Score, c.Weight))
		} else {
			exposure = append(exposure, c.Source+" "+c.Delta)
		}
	}
	out := strings.Join(detectors, ", ")
	if len(exposure) > 0 {
		out += "; " + strings.Join(exposure, ", ")
	}
	return out
}

// ParseScore reads an API decimal score.
func ParseScore(s securityv1alpha1.Score) (float64, error) {
	return strconv.ParseFloat(string(s), 64)
}

// FormatScore writes a score in [0,1] as the API's decimal string (at most
// four decimals, rounded down so "at or above" never flips by formatting).
func FormatScore(f float64) securityv1alpha1.Score {
	f = clamp(f, 0, 1)
	return securityv1alpha1.Score(strconv.FormatFloat(math.Floor(f*1e4+1e-9)/1e4, 'f', -1, 64))
}

// FormatDelta writes a signed delta such as "+0.05".
func FormatDelta(d float64) string {
	d = math.Round(d*1e4) / 1e4
	if d < 0 {
		return strconv.FormatFloat(d, 'f', -1, 64)
	}
	return "+" + strconv.FormatFloat(d, 'f', -1, 64)
}

func clamp(f, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, f)) }
