##@ Containment

BENCH_QUARANTINES ?= 50

.PHONY: test-containment
test-containment: kube-binaries ## Containment engine unit tests and the Quarantine controller's envtest suite (crash test included).
	go test ./internal/containment/... ./internal/controller/quarantine/... -count=1 -timeout 20m

.PHONY: bench-containment
bench-containment: kube-binaries ## N Quarantines at once against envtest: p50/p99 to Contained, throughput, raw NetworkPolicy latency (BENCH_QUARANTINES=50).
	BENCH_QUARANTINES=$(BENCH_QUARANTINES) go test ./internal/controller/quarantine/ -run '^$$' -bench BenchmarkContainment -benchtime 3x -count=1 -timeout 20m
