# The built-in behavior model: offline evaluation on the shared intrusion
# data sets and per-event benchmarks (one core, so numbers are per core).

BULKHEAD_SHARED ?= $(abspath $(CURDIR)/../shared)
EVAL_OUT ?= $(LOCALBIN)/eval

##@ Behavior model

.PHONY: eval-adfa
eval-adfa: ## Train on ADFA-LD training traces, score validation+attack: AUC, DR at 1%/5% FAR, report.json, roc.png.
	GOMAXPROCS=1 go run ./cmd eval --format adfa --dataset-dir $(BULKHEAD_SHARED)/datasets/adfa-ld --out $(EVAL_OUT)/adfa-ld

.PHONY: eval-lidds
eval-lidds: ## Replay the LID-DS recordings: time from exploit start to first alarm, false alarms before it.
	GOMAXPROCS=1 go run ./cmd eval --format lidds --dataset-dir $(BULKHEAD_SHARED)/datasets/lid-ds --out $(EVAL_OUT)/lid-ds

.PHONY: bench-behavior
bench-behavior: ## Benchmarks: ns and allocations per event for each model, baseline size, real ADFA-LD scoring cost.
	GOMAXPROCS=1 go test -run '^$$' -bench . -benchmem ./internal/behavior/... ./internal/eval/...

.PHONY: test-behavior
test-behavior: ## Unit tests of the behavior model and the evaluation (needs the shared data sets).
	BULKHEAD_SHARED=$(BULKHEAD_SHARED) go test ./internal/behavior/... ./internal/eval/...
