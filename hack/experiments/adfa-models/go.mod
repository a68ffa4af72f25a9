module github.com/bulkhead-dev/bulkhead/hack/experiments/adfa-models

go 1.26
