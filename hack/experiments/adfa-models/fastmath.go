package main

import "math"

// expf is exp for float32 via 2^n * p(f), relative error ~2e-7.
func expf(x float32) float32 {
	if x > 88 {
		x = 88
	} else if x < -87 {
		x = -87
	}
	t := x * 1.4426950408889634
	ni := int32(t)
	if t < float32(ni) {
		ni--
	}
	f := t - float32(ni)
	// 2^f on [0,1)
	p := float32(1.8775767e-3)
	p = p*f + 8.9893397e-3
	p = p*f + 5.5826318e-2
	p = p*f + 2.4015361e-1
	p = p*f + 6.9315308e-1
	p = p*f + 1.0
	return math.Float32frombits(math.Float32bits(p) + uint32(ni)<<23)
}

func sigmf(x float32) float32 { return 1 / (1 + expf(-x)) }
func tanhf(x float32) float32 { return 2/(1+expf(-2*x)) - 1 }
