package main

import (
	"math"
	"testing"
)

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -80.0; x < 80; x += 0.0137 {
		r := math.Abs(float64(expf(float32(x)))/math.Exp(x) - 1)
		if r > worst {
			worst = r
		}
	}
	t.Log(worst)
	if worst > 1e-5 {
		t.Fatal(worst)
	}
}

var sink float32

func BenchmarkExpf(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += expf(float32(i&63)*0.1 - 3)
	}
}
func BenchmarkExp(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += float32(math.Exp(float64(i&63)*0.1 - 3))
	}
}
