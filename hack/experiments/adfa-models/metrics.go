package main

import (
	"math"
	"sort"
)

// AUC is the area under the ROC curve: the probability that a random attack
// scores above a random normal trace, ties counting half (Mann-Whitney U).
func AUC(normal, attack []float64) float64 {
	if len(normal) == 0 || len(attack) == 0 {
		return math.NaN()
	}
	type pt struct {
		s   float64
		atk bool
	}
	all := make([]pt, 0, len(normal)+len(attack))
	for _, s := range normal {
		all = append(all, pt{s, false})
	}
	for _, s := range attack {
		all = append(all, pt{s, true})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].s < all[j].s })
	// Sum of attack ranks with mid-ranks for ties.
	var rankSum float64
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].s == all[i].s {
			j++
		}
		mid := float64(i+j+1) / 2
		for k := i; k < j; k++ {
			if all[k].atk {
				rankSum += mid
			}
		}
		i = j
	}
	na, nn := float64(len(attack)), float64(len(normal))
	return (rankSum - na*(na+1)/2) / (na * nn)
}

// DetectionAt is the fraction of attacks flagged when the threshold is set so
// that at most far of the normal traces are flagged (score > threshold).
func DetectionAt(normal, attack []float64, far float64) (dr, threshold float64) {
	threshold = Threshold(normal, far)
	n := 0
	for _, s := range attack {
		if s > threshold {
			n++
		}
	}
	return float64(n) / float64(len(attack)), threshold
}

// Threshold is the smallest observed normal score t such that at most far of
// the normal scores exceed t.
func Threshold(normal []float64, far float64) float64 {
	s := append([]float64(nil), normal...)
	sort.Float64s(s)
	allowed := int(math.Floor(far * float64(len(s))))
	i := len(s) - 1 - allowed
	if i < 0 {
		return math.Inf(-1)
	}
	return s[i]
}

// ROCPoint is one operating point.
type ROCPoint struct {
	FAR float64 `json:"far"`
	DR  float64 `json:"dr"`
}

// ROC is the curve from (0,0) to (1,1), one point per distinct threshold.
func ROC(normal, attack []float64) []ROCPoint {
	ts := append(append([]float64(nil), normal...), attack...)
	sort.Sort(sort.Reverse(sort.Float64Slice(ts)))
	n := append([]float64(nil), normal...)
	a := append([]float64(nil), attack...)
	sort.Sort(sort.Reverse(sort.Float64Slice(n)))
	sort.Sort(sort.Reverse(sort.Float64Slice(a)))
	pts := []ROCPoint{{0, 0}}
	var i, j int
	for k := 0; k < len(ts); k++ {
		if k > 0 && ts[k] == ts[k-1] {
			continue
		}
		t := ts[k]
		for i < len(n) && n[i] >= t {
			i++
		}
		for j < len(a) && a[j] >= t {
			j++
		}
		pts = append(pts, ROCPoint{float64(i) / float64(len(n)), float64(j) / float64(len(a))})
	}
	return pts
}
