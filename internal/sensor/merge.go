package sensor

import (
	"github.com/bulkhead-dev/bulkhead/internal/behavior"
)

// MergeBaselines folds local into a copy of stored with behavior's own Merge
// (token ids are hashed, so nodes agree without a shared vocabulary).
func MergeBaselines(stored, local *behavior.Baseline) (*behavior.Baseline, error) {
	data, err := stored.MarshalBinary() // a deep copy: never change the caller's
	if err != nil {
		return nil, err
	}
	out := &behavior.Baseline{}
	if err := out.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	if err := out.Merge(local); err != nil {
		return nil, err
	}
	return out, nil
}
