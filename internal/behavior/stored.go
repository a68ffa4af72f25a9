package behavior

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"time"
)

// MaxStoredBytes is the most a baseline takes where it is stored (a
// ConfigMap in etcd: 5,000 workloads in under 100 MB).
const MaxStoredBytes = 20 << 10

// storedMagic starts the stored form; version 1 was gzip'd gob (its token
// numbering cannot merge, so it is refused and relearned).
const storedMagic = "BHB2"

// stored is the stored form of a Baseline: the n-gram filters and sets as
// Golomb-Rice coded sorted integers, calibration scores and resource
// samples quantized to 16 bits; gob, then flate.
type stored struct {
	Key       Key
	Started   time.Time
	Window    time.Duration
	Events    uint64
	Syscalls  storedSeq
	ExecSeq   storedSeq
	Sets      [5]storedSet // exec binaries, edges, shapes; network destinations, ports
	SysNormal []uint16     // score * 65535
	SysNext   int
	ResCap    int
	ResSeen   uint64
	ResSample []uint16 // nFeat per sample, feature * resScale
}

type storedSeq struct {
	N     int
	Grams uint64
	Words uint32 // filter size in 64-bit words, a power of two
	Raw   bool   // Data is the filter's words, else bit positions Rice coded:
	Clear bool   // of the clear bits (filters more than half full), else of the set ones
	Data  []byte
}

type storedSet struct {
	Cap  int
	Drop uint8
	Data []byte // Rice-coded sorted hashes in 64-Drop bits
}

// resScale quantizes log1p features: steps of 1/1024, up to e^64.
const resScale = 1024

// Limits on decoding, so a hostile or corrupt object cannot make a reader
// allocate without bound.
const (
	maxFilterWords = 1 << 20
	maxSetItems    = 1 << 20
	maxResSamples  = 1 << 16
)

// setHashBits is how many hash bits above log2(items) a stored set keeps at
// first: a false "seen" once in 2^24 lookups.
const setHashBits = 24

// MarshalBinary encodes the baseline in at most MaxStoredBytes. A baseline
// that learned more than fits is shrunk, largest part first: n-gram filters
// are folded in half (more n-grams test as seen), sets keep fewer hash bits,
// the resource reservoir keeps fewer samples (always the extremes). Each
// step can only turn novelty into "seen", never the reverse, so a shrunk
// baseline misses more but raises no alarm the full one would not.
func (b *Baseline) MarshalBinary() ([]byte, error) {
	w := newShrinker(b)
	// Shrink on an estimate first (the coded parts do not compress), then
	// on the real size: one or two encodings instead of one per step.
	for w.estimate() > MaxStoredBytes && w.shrink() {
	}
	for {
		data, err := w.encode()
		if err != nil {
			return nil, err
		}
		if len(data) <= MaxStoredBytes {
			return data, nil
		}
		if !w.shrink() {
			return nil, fmt.Errorf("baseline %s: %d bytes with every part at its smallest, over %d", b.Key, len(data), MaxStoredBytes)
		}
	}
}

// shrinker holds copies of the parts of a baseline that shrinking changes,
// and their encodings (nil when stale).
type shrinker struct {
	b        *Baseline
	seqs     [2]Seq
	sets     [5]Set
	samples  [][nFeat]float64
	encSeqs  [2]*storedSeq
	encSets  [5]*storedSet
	encSamp  []uint16
	sampDone bool
}

func newShrinker(b *Baseline) *shrinker {
	w := &shrinker{b: b, samples: b.Res.Samples}
	for i, s := range []*Seq{b.Syscalls, b.ExecSeq} {
		w.seqs[i] = Seq{N: s.N, Bits: s.Bits, Grams: s.Grams}
	}
	for i, s := range b.sets() {
		w.sets[i] = *s
		// Keep log2(n)+setHashBits bits: 64-bit hashes would waste ~40 bits an item.
		if keep := bits.Len(uint(len(s.Items))) + setHashBits; keep < 64-int(s.Drop) {
			w.sets[i].shrink(uint8(64 - int(s.Drop) - keep))
		}
	}
	return w
}

// sets are the baseline's sets in stored order.
func (b *Baseline) sets() [5]*Set {
	return [5]*Set{&b.Exec.Binaries, &b.Exec.Edges, &b.Exec.Shapes, &b.Net.Dests, &b.Net.Ports}
}

// storedOverhead bounds what the estimate leaves out: gob's type
// descriptions and field tags, the key, flate's framing.
const storedOverhead = 1 << 10

// estimate is an upper bound on the stored size, bar an exotic key.
func (w *shrinker) estimate() int {
	n := storedOverhead + 2*len(w.b.SysNormal) + 2*nFeat*len(w.samples) + len(w.b.Key.String())
	for i := range w.seqs {
		if w.encSeqs[i] == nil {
			w.encSeqs[i] = encodeSeq(&w.seqs[i])
		}
		n += len(w.encSeqs[i].Data)
	}
	for i := range w.sets {
		if w.encSets[i] == nil {
			w.encSets[i] = encodeSet(&w.sets[i])
		}
		n += len(w.encSets[i].Data)
	}
	return n
}

func (w *shrinker) encode() ([]byte, error) {
	b := w.b
	st := stored{
		Key: b.Key, Started: b.Started, Window: b.Window, Events: b.Events,
		SysNext: b.SysNext, ResCap: b.Res.Cap, ResSeen: b.Res.Seen,
	}
	for i := range w.seqs {
		if w.encSeqs[i] == nil {
			w.encSeqs[i] = encodeSeq(&w.seqs[i])
		}
	}
	st.Syscalls, st.ExecSeq = *w.encSeqs[0], *w.encSeqs[1]
	for i := range w.sets {
		if w.encSets[i] == nil {
			w.encSets[i] = encodeSet(&w.sets[i])
		}
		st.Sets[i] = *w.encSets[i]
	}
	for _, v := range b.SysNormal {
		st.SysNormal = append(st.SysNormal, uint16(math.Round(min(max(v, 0), 1)*65535)))
	}
	if !w.sampDone {
		w.encSamp = w.encSamp[:0]
		for _, s := range w.samples {
			for _, f := range s {
				w.encSamp = append(w.encSamp, uint16(math.Round(min(max(f, 0), 65535.0/resScale)*resScale)))
			}
		}
		w.sampDone = true
	}
	st.ResSample = w.encSamp
	var buf bytes.Buffer
	buf.WriteString(storedMagic)
	zw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	if err := gob.NewEncoder(zw).Encode(&st); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Shrinking floors: filters and sets shrink to these first; the resource
// reservoir thins only when they are reached (thinning keeps the learned
// range but moves the median and spread the scores use), and only then do
// filters and sets shrink below them.
const (
	floorFilterWords = 64 // 4 Kbit
	floorSetBits     = 8  // bits above log2(items): a false "seen" once in 256
)

// shrink makes the largest part that can still shrink smaller; false when
// none can.
func (w *shrinker) shrink() bool {
	best, size := -1, 0
	consider := func(i, n int) {
		if n > size {
			best, size = i, n
		}
	}
	for _, floors := range []bool{true, false} {
		for i := range w.seqs {
			if len(w.seqs[i].Bits) > 1 && (!floors || len(w.seqs[i].Bits) > floorFilterWords) {
				consider(i, len(w.encSeqs[i].Data))
			}
		}
		for i := range w.sets {
			s := &w.sets[i]
			if s.Drop < 64 && len(s.Items) > 0 && (!floors || 64-int(s.Drop) > bits.Len(uint(len(s.Items)))+floorSetBits) {
				consider(2+i, len(w.encSets[i].Data))
			}
		}
		if best < 0 && floors && len(w.samples) > 0 {
			consider(7, 2*nFeat*len(w.samples))
		}
		if best >= 0 {
			break
		}
	}
	switch {
	case best < 0:
		return false
	case best < 2:
		s := &w.seqs[best]
		s.Bits = slices.Clone(s.Bits) // fold writes in place
		s.fold()
		w.encSeqs[best] = nil
	case best < 7:
		w.sets[best-2].shrink(4)
		w.encSets[best-2] = nil
	default:
		w.samples = thin(w.samples)
		w.sampDone = false
	}
	return true
}

// thin halves a reservoir, keeping each feature's extremes (so the learned
// range does not narrow); below the 8 samples the model needs, it empties.
func thin(s [][nFeat]float64) [][nFeat]float64 {
	if len(s) < 16 {
		return nil
	}
	keep := make([]bool, len(s))
	for f := 0; f < nFeat; f++ {
		lo, hi := 0, 0
		for i := range s {
			if s[i][f] < s[lo][f] {
				lo = i
			}
			if s[i][f] > s[hi][f] {
				hi = i
			}
		}
		keep[lo], keep[hi] = true, true
	}
	var out [][nFeat]float64
	for i := range s {
		if keep[i] || i%2 == 0 {
			out = append(out, s[i])
		}
	}
	return out
}

func encodeSeq(s *Seq) *storedSeq {
	out := &storedSeq{N: s.N, Grams: s.Grams, Words: uint32(len(s.Bits))}
	ones := 0
	for _, w := range s.Bits {
		ones += bits.OnesCount64(w)
	}
	// Code the rarer of set and clear bits: a saturated filter is mostly ones.
	out.Clear = 2*ones > 64*len(s.Bits)
	pos := make([]uint64, 0, min(ones, 64*len(s.Bits)-ones))
	for i, w := range s.Bits {
		if out.Clear {
			w = ^w
		}
		for w != 0 {
			pos = append(pos, uint64(i*64+bits.TrailingZeros64(w)))
			w &= w - 1
		}
	}
	ubits := uint(bits.Len(uint(len(s.Bits)*64 - 1)))
	rice := putSorted(pos, ubits)
	if len(rice) < 8*len(s.Bits) {
		out.Data = rice
		return out
	}
	out.Raw, out.Clear = true, false
	for _, w := range s.Bits {
		out.Data = binary.LittleEndian.AppendUint64(out.Data, w)
	}
	return out
}

func decodeSeq(st *storedSeq) (*Seq, error) {
	w := int(st.Words)
	if w < 1 || w > maxFilterWords || w&(w-1) != 0 {
		return nil, fmt.Errorf("filter of %d words is not a power of two up to %d", w, maxFilterWords)
	}
	if st.N < 1 || st.N > 64 {
		return nil, fmt.Errorf("n-gram length %d out of range", st.N)
	}
	s := &Seq{N: st.N, Grams: st.Grams, Bits: make([]uint64, w)}
	if st.Raw {
		if len(st.Data) != 8*w {
			return nil, fmt.Errorf("raw filter of %d bytes for %d words", len(st.Data), w)
		}
		for i := range s.Bits {
			s.Bits[i] = binary.LittleEndian.Uint64(st.Data[8*i:])
		}
		return s, nil
	}
	pos, err := getSorted(st.Data, uint(bits.Len(uint(w*64-1))), w*64)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	for _, p := range pos {
		s.Bits[p/64] |= 1 << (p % 64)
	}
	if st.Clear {
		for i := range s.Bits {
			s.Bits[i] = ^s.Bits[i]
		}
	}
	return s, nil
}

func encodeSet(s *Set) *storedSet {
	out := &storedSet{Cap: s.Cap, Drop: s.Drop}
	if s.Drop >= 64 {
		return out
	}
	vals := make([]uint64, 0, len(s.Items))
	for k := range s.Items {
		vals = append(vals, k)
	}
	slices.Sort(vals)
	out.Data = putSorted(vals, uint(64-s.Drop))
	return out
}

func decodeSet(st *storedSet) (Set, error) {
	if st.Drop > 64 || st.Cap < 0 {
		return Set{}, fmt.Errorf("set with %d bits dropped, cap %d", st.Drop, st.Cap)
	}
	s := Set{Cap: st.Cap, Drop: st.Drop, Items: map[uint64]struct{}{}}
	if st.Drop == 64 {
		return s, nil
	}
	vals, err := getSorted(st.Data, uint(64-st.Drop), maxSetItems)
	if err != nil {
		return Set{}, fmt.Errorf("set: %w", err)
	}
	for _, v := range vals {
		s.Items[v] = struct{}{}
	}
	return s, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. Bad input is an error
// and leaves b unchanged.
func (b *Baseline) UnmarshalBinary(data []byte) error {
	rest, ok := bytes.CutPrefix(data, []byte(storedMagic))
	if !ok {
		return errors.New("not a stored baseline (or one of the older, unmergeable format)")
	}
	var st stored
	zr := flate.NewReader(bytes.NewReader(rest))
	defer zr.Close()
	if err := gob.NewDecoder(io.LimitReader(zr, 4<<20)).Decode(&st); err != nil {
		return fmt.Errorf("decoding stored baseline: %w", err)
	}
	out := Baseline{Key: st.Key, Started: st.Started, Window: st.Window, Events: st.Events, SysNext: st.SysNext}
	if st.Window < 0 {
		return fmt.Errorf("negative learning window %v", st.Window)
	}
	var err error
	if out.Syscalls, err = decodeSeq(&st.Syscalls); err != nil {
		return fmt.Errorf("syscall model: %w", err)
	}
	if out.ExecSeq, err = decodeSeq(&st.ExecSeq); err != nil {
		return fmt.Errorf("exec order model: %w", err)
	}
	var sets [5]Set
	for i := range sets {
		if sets[i], err = decodeSet(&st.Sets[i]); err != nil {
			return err
		}
	}
	out.Exec = &Exec{Binaries: sets[0], Edges: sets[1], Shapes: sets[2]}
	out.Net = &Net{Dests: sets[3], Ports: sets[4]}
	if len(st.SysNormal) > recentBatches || st.SysNext < 0 || st.SysNext >= max(len(st.SysNormal), 1) {
		return fmt.Errorf("calibration ring of %d at %d", len(st.SysNormal), st.SysNext)
	}
	for _, v := range st.SysNormal {
		out.SysNormal = append(out.SysNormal, float64(v)/65535)
	}
	if len(st.ResSample)%nFeat != 0 || len(st.ResSample)/nFeat > maxResSamples || st.ResCap < 0 {
		return fmt.Errorf("resource reservoir of %d values, cap %d", len(st.ResSample), st.ResCap)
	}
	out.Res = &Resource{Cap: st.ResCap, Seen: st.ResSeen}
	for i := 0; i < len(st.ResSample); i += nFeat {
		var v [nFeat]float64
		for f := range v {
			v[f] = float64(st.ResSample[i+f]) / resScale
		}
		out.Res.Samples = append(out.Res.Samples, v)
	}
	*b = out
	return nil
}
