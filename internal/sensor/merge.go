package sensor

import (
	"maps"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// MergeBaselines is the interim MergeFunc until behavior.Baseline has its
// own Merge (then: func(s, l *behavior.Baseline) (*behavior.Baseline, error)
// { return s.Merge(l) } or whatever its signature is, and delete this file).
// A union, so merging is commutative and idempotent:
//   - sets (binaries, edges, argument shapes, destinations, ports): union up to the cap;
//   - the syscall and exec-order filters: OR of the bits when the two
//     vocabularies agree on every shared id (the sensor seeds the syscall
//     vocabulary in syscall-number order, so nodes agree), else the filter
//     that holds more n-grams;
//   - resource samples and calibration scores: union without duplicates up to the cap;
//   - counters: the larger (an under-count rather than a double count);
//   - the learning window starts at the earlier start.
func MergeBaselines(stored, local *behavior.Baseline) (*behavior.Baseline, error) {
	data, err := stored.MarshalBinary() // a deep copy: never change the caller's
	if err != nil {
		return nil, err
	}
	out := &behavior.Baseline{}
	if err := out.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	if local.Started.Before(out.Started) {
		out.Started = local.Started
	}
	out.Events = max(out.Events, local.Events)
	out.Syscalls = mergeSeq(out.Syscalls, local.Syscalls)
	out.ExecSeq = mergeSeq(out.ExecSeq, local.ExecSeq)
	if out.Exec != nil && local.Exec != nil {
		mergeSet(&out.Exec.Binaries, local.Exec.Binaries)
		mergeSet(&out.Exec.Edges, local.Exec.Edges)
		mergeSet(&out.Exec.Shapes, local.Exec.Shapes)
	}
	if out.Net != nil && local.Net != nil {
		mergeSet(&out.Net.Dests, local.Net.Dests)
		mergeSet(&out.Net.Ports, local.Net.Ports)
	}
	if out.Res != nil && local.Res != nil {
		out.Res.Seen = max(out.Res.Seen, local.Res.Seen)
		for _, s := range local.Res.Samples {
			if len(out.Res.Samples) >= out.Res.Cap {
				break
			}
			if !slices.Contains(out.Res.Samples, s) {
				out.Res.Samples = append(out.Res.Samples, s)
			}
		}
	}
	const recentBatches = 256 // behavior's calibration ring
	for _, v := range local.SysNormal {
		if len(out.SysNormal) >= recentBatches {
			break
		}
		if !slices.Contains(out.SysNormal, v) {
			out.SysNormal = append(out.SysNormal, v)
		}
	}
	out.SysNext = len(out.SysNormal) % recentBatches
	return out, nil
}

func mergeSet(dst *behavior.Set, src behavior.Set) {
	if dst.Items == nil {
		dst.Items = map[string]struct{}{}
	}
	for _, k := range slices.Sorted(maps.Keys(src.Items)) {
		dst.Add(k)
	}
}

// mergeSeq ORs b into a when their vocabularies are compatible.
func mergeSeq(a, b *behavior.Seq) *behavior.Seq {
	switch {
	case b == nil:
		return a
	case a == nil:
		return b
	}
	byID := map[uint32]string{}
	for tok, id := range a.Vocab {
		byID[id] = tok
	}
	ok := a.N == b.N && len(a.Bits) == len(b.Bits)
	for tok, id := range b.Vocab {
		if !ok {
			break
		}
		if aid, has := a.Vocab[tok]; has && aid != id {
			ok = false
		} else if other, used := byID[id]; used && other != tok {
			ok = false
		}
	}
	if !ok {
		if b.Grams > a.Grams {
			return b
		}
		return a
	}
	for tok, id := range b.Vocab {
		a.Vocab[tok] = id
	}
	for i := range a.Bits {
		a.Bits[i] |= b.Bits[i]
	}
	a.Grams = max(a.Grams, b.Grams)
	return a
}
