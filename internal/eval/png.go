package eval

import (
	"image"
	"image/color"
	"image/png"
	"io"
)

// WriteROCPNG draws ROC curves (false-alarm rate on x, detection rate on y)
// with the chance diagonal, one colour per curve in order.
func WriteROCPNG(w io.Writer, curves ...[]ROCPoint) error {
	const size, pad = 480, 40
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	plot := size - 2*pad
	at := func(p ROCPoint) (int, int) {
		return pad + int(p.FAR*float64(plot)), size - pad - int(p.DR*float64(plot))
	}
	line := func(a, b ROCPoint, c color.Color) {
		x0, y0 := at(a)
		x1, y1 := at(b)
		drawLine(img, x0, y0, x1, y1, c)
	}
	black, grey := color.RGBA{0, 0, 0, 255}, color.RGBA{180, 180, 180, 255}
	// Frame, ticks every 0.1 and the diagonal.
	line(ROCPoint{0, 0}, ROCPoint{1, 0}, black)
	line(ROCPoint{0, 0}, ROCPoint{0, 1}, black)
	line(ROCPoint{1, 0}, ROCPoint{1, 1}, grey)
	line(ROCPoint{0, 1}, ROCPoint{1, 1}, grey)
	line(ROCPoint{0, 0}, ROCPoint{1, 1}, grey)
	for i := 1; i < 10; i++ {
		t := float64(i) / 10
		x, y := at(ROCPoint{t, t})
		drawLine(img, x, size-pad, x, size-pad+5, black)
		drawLine(img, pad-5, y, pad, y, black)
	}
	palette := []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}, {255, 127, 14, 255}}
	for i, c := range curves {
		col := palette[i%len(palette)]
		for j := 1; j < len(c); j++ {
			// Step curve: across, then up, as thresholds sweep.
			line(c[j-1], ROCPoint{c[j].FAR, c[j-1].DR}, col)
			line(ROCPoint{c[j].FAR, c[j-1].DR}, c[j], col)
		}
	}
	return png.Encode(w, img)
}

// drawLine is Bresenham's algorithm, two pixels thick.
func drawLine(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0+1, y0, c)
		img.Set(x0, y0-1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}
