package behavior

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Sorted sets of integers (the set bits of a filter, the hashes of a Set) are
// stored Golomb-Rice coded: the gaps between consecutive values, each as a
// unary quotient and k low bits. For n random values in a universe of u that
// is about log2(u/n) + 1.5 bits a value, close to the entropy of the set.

// riceK is the Rice parameter for n values spread over 2^ubits.
func riceK(n int, ubits uint) uint {
	if n == 0 {
		return 0
	}
	// log2(u/n), floored, clamped to [0, ubits-1].
	k := int(ubits) - bits.Len(uint(n))
	return uint(max(0, min(k, int(ubits)-1)))
}

type bitWriter struct {
	buf  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(v uint64, n uint) {
	for n > 0 {
		take := min(n, 64-w.nacc, 32)
		w.acc |= (v & (1<<take - 1)) << w.nacc
		w.nacc += take
		v >>= take
		n -= take
		for w.nacc >= 8 {
			w.buf = append(w.buf, byte(w.acc))
			w.acc >>= 8
			w.nacc -= 8
		}
	}
}

func (w *bitWriter) bytes() []byte {
	if w.nacc > 0 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
	return w.buf
}

type bitReader struct {
	buf []byte
	pos uint // bit position
}

var errShort = errors.New("truncated bit stream")

func (r *bitReader) bit() (uint64, error) {
	if r.pos/8 >= uint(len(r.buf)) {
		return 0, errShort
	}
	b := uint64(r.buf[r.pos/8]>>(r.pos%8)) & 1
	r.pos++
	return b, nil
}

func (r *bitReader) read(n uint) (uint64, error) {
	var v uint64
	for i := uint(0); i < n; i++ {
		b, err := r.bit()
		if err != nil {
			return 0, err
		}
		v |= b << i
	}
	return v, nil
}

// putSorted encodes strictly increasing values below 2^ubits (ubits <= 64).
func putSorted(vals []uint64, ubits uint) []byte {
	k := riceK(len(vals), ubits)
	out := binary.AppendUvarint(nil, uint64(len(vals)))
	out = append(out, byte(k))
	w := bitWriter{buf: out}
	var prev uint64
	for i, v := range vals {
		g := v - prev
		if i > 0 {
			g-- // strictly increasing: gaps of at least 1
		}
		for q := g >> k; q > 0; q-- {
			w.write(1, 1)
		}
		w.write(0, 1)
		w.write(g, k)
		prev = v
	}
	return w.bytes()
}

// getSorted decodes what putSorted wrote, refusing more than maxN values,
// values outside the universe and trailing garbage beyond the last byte.
func getSorted(data []byte, ubits uint, maxN int) ([]uint64, error) {
	n, m := binary.Uvarint(data)
	if m <= 0 || n > uint64(maxN) || len(data) < m+1 {
		return nil, fmt.Errorf("bad sorted-set header")
	}
	k := uint(data[m])
	if k >= max(ubits, 1) {
		return nil, fmt.Errorf("bad Rice parameter %d", k)
	}
	r := bitReader{buf: data[m+1:]}
	out := make([]uint64, 0, n)
	var prev uint64
	for i := uint64(0); i < n; i++ {
		var q uint64
		for {
			b, err := r.bit()
			if err != nil {
				return nil, err
			}
			if b == 0 {
				break
			}
			q++
			if q > 1<<min(ubits-k, 63) {
				return nil, fmt.Errorf("gap beyond the universe")
			}
		}
		low, err := r.read(k)
		if err != nil {
			return nil, err
		}
		g := q<<k | low
		v := prev + g
		if i > 0 {
			v++
		}
		if v < prev || (ubits < 64 && v>>ubits != 0) {
			return nil, fmt.Errorf("value beyond the universe")
		}
		out = append(out, v)
		prev = v
	}
	if (r.pos+7)/8 != uint(len(r.buf)) {
		return nil, fmt.Errorf("trailing bytes after %d values", n)
	}
	return out, nil
}
