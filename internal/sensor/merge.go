package sensor

import (
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// calibrationRing is behavior's ring of recent calibration scores.
const calibrationRing = 256

// MergeBaselines folds a node's cumulative learning (local) into a copy of
// the shared baseline (stored) with behavior's own Merge: token ids are
// hashed, so nodes agree without a shared vocabulary. Every flush re-sends
// the node's whole learning, so the merge must be idempotent: filters and
// sets are unions already; counts take the larger side instead of adding,
// and calibration scores are a union without repeats.
func MergeBaselines(stored, local *behavior.Baseline) (*behavior.Baseline, error) {
	data, err := stored.MarshalBinary() // a deep copy: never change the caller's
	if err != nil {
		return nil, err
	}
	out := &behavior.Baseline{}
	if err := out.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	events := max(out.Events, local.Events)
	calib := slices.Clone(out.SysNormal)
	for _, v := range local.SysNormal {
		if len(calib) < calibrationRing && !slices.Contains(calib, v) {
			calib = append(calib, v)
		}
	}
	var seen uint64
	if out.Res != nil && local.Res != nil {
		seen = max(out.Res.Seen, local.Res.Seen)
	}
	if err := out.Merge(local); err != nil {
		return nil, err
	}
	out.Events = events
	out.SysNormal, out.SysNext = calib, 0 // oldest first, as Merge leaves it
	if out.Res != nil && seen > 0 {
		out.Res.Seen = seen
	}
	return out, nil
}
