module github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models

go 1.26.0

require github.com/bulkhead-dev/bulkhead v0.0.0

// The ADFA-LD loader and the ROC metrics are internal/eval's, the ones
// `bulkhead eval` reports with.
replace github.com/bulkhead-dev/bulkhead => ../../..
