# Time-to-isolate and time-to-contain benchmark, each against its floor
# (single threats on an idle cluster too), ingestion throughput, manager
# memory per watched pod (local control plane with kwok nodes, the manager
# as a process under its ServiceAccount), then the per-event detector
# benchmarks. The report is printed at the end; targets are reported, not
# asserted.

BENCH_PODS ?= 2000
BENCH_THREATS ?= 200
BENCH_TIMEOUT ?= 30m
# Score → packets dropped: pods isolated at once, kwok nodes (one sensor
# process each), ms between each pod's probe datagrams.
BENCH_DROP_PODS ?= 200
BENCH_DROP_NODES ?= 4
BENCH_DROP_INTERVAL_MS ?= 50

##@ Load

.PHONY: bench
bench: kube-binaries kwok build ## Time to isolate and to contain p50/p99 vs their client-go floors, requests per containment, ingestion events/s, memory per pod, detector ns/event (BENCH_PODS, BENCH_THREATS).
	BENCH_PODS=$(BENCH_PODS) BENCH_THREATS=$(BENCH_THREATS) BENCH_QPS=$(BENCH_QPS) BENCH_BURST=$(BENCH_BURST) BENCH_CONCURRENCY=$(BENCH_CONCURRENCY) \
	  go test -tags bench ./test/bench/ -run '^TestBench$$' -count=1 -v -timeout $(BENCH_TIMEOUT)
	@echo ">> pod cache: exact bytes per cached pod, in process (the bench's gctrace reading has 1 MB resolution)"
	go test -run '^$$' -bench CachedPodBytes -benchtime 3x ./internal/podcache/
	@echo ">> detector: ns per event on one core (internal/behavior benchmarks)"
	GOMAXPROCS=1 go test -run '^$$' -bench . -benchmem -benchtime 1s ./internal/behavior/

.PHONY: bench-drop
bench-drop: kube-binaries kwok build ## (root, BPF) Score → packets dropped p50/p99, 1 pod and BENCH_DROP_PODS at once: real processes in kwok pods' cgroups, one `bulkhead sensor` per kwok node, and where the time goes.
	BENCH_DROP_PODS=$(BENCH_DROP_PODS) BENCH_DROP_NODES=$(BENCH_DROP_NODES) BENCH_DROP_INTERVAL_MS=$(BENCH_DROP_INTERVAL_MS) \
	  go test -tags bench ./test/bench/ -run '^TestBenchDrop$$' -count=1 -v -timeout $(BENCH_TIMEOUT)
