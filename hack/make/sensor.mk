# Sensor: eBPF programs (C, CO-RE) compiled with clang-14 into objects that
# bpf2go embeds in generated Go files. Both are committed, so a Go build needs
# no clang; these targets regenerate and check them.

BPF_CLANG ?= clang-14
# What go generate writes: bpf2go's objects and bindings, any target.
BPF_GENERATED = ':(glob)internal/sensor/**/*_bpfe[bl].o' ':(glob)internal/sensor/**/*_bpfe[bl].go'
SENSOR_BENCH_COUNT ?= 5
SENSOR_BENCH_CALLS ?= 2000000x
# Rounds (alternating with/without) and requests per round of the server
# and sibling benchmarks (40000: a load spans several of the duty cycle's 2 s
# periods); seconds of load the baseline benchmark learns.
SENSOR_BENCH_ROUNDS ?= 6
SENSOR_BENCH_REQUESTS ?= 40000
SENSOR_BENCH_LEARN ?= 10s

##@ Sensor

.PHONY: generate-bpf
generate-bpf: ## Regenerate the BPF objects and their Go bindings (needs clang-14, llvm-strip-14).
	@command -v $(BPF_CLANG) >/dev/null || { echo "$(BPF_CLANG) not found: apt-get install clang-14 llvm-14"; exit 1; }
	go generate ./internal/sensor/...

.PHONY: verify-bpf
verify-bpf: ## Fail when the committed BPF objects or bindings differ from a fresh build (skipped without clang-14).
	@if ! command -v $(BPF_CLANG) >/dev/null; then \
	  echo "verify-bpf: skipped, $(BPF_CLANG) is not installed (the committed objects are used as they are)"; exit 0; fi; \
	go generate ./internal/sensor/... && \
	if [ -n "$$(git status --porcelain -- $(BPF_GENERATED))" ]; then \
	  echo "BPF objects or bindings are stale; run 'make generate-bpf' and commit:"; \
	  git status --porcelain -- $(BPF_GENERATED); exit 1; fi; \
	echo "BPF objects and bindings are up to date"

.PHONY: bench-sensor
bench-sensor: ## Sensor overhead (root): ns per getppid, a real server's throughput and CPU with the collector (system calls always collected, and at the default --syscall-cpu-budget with the duty observed), sensor CPU and memory, baseline bytes per workload, enforcement cost on sibling pods.
	@echo "bench-sensor: $$(date -u +%FT%TZ), load average $$(cut -d' ' -f1-3 /proc/loadavg), $$(nproc) CPUs"
	go test -run '^$$' -bench SyscallOverhead -benchtime $(SENSOR_BENCH_CALLS) -count $(SENSOR_BENCH_COUNT) -timeout 10m ./internal/sensor/collect/
	BULKHEAD_BENCH_ROUNDS=$(SENSOR_BENCH_ROUNDS) BULKHEAD_BENCH_REQUESTS=$(SENSOR_BENCH_REQUESTS) \
	  go test -run '^$$' -bench ServerThroughput -benchtime 1x -timeout 15m ./internal/sensor/collect/
	BULKHEAD_BENCH_ROUNDS=$(SENSOR_BENCH_ROUNDS) go test -run '^$$' -bench SiblingOverhead -benchtime 1x -timeout 10m ./internal/sensor/enforce/
	BULKHEAD_BENCH_LEARN=$(SENSOR_BENCH_LEARN) go test -run '^$$' -bench BaselineBytes -benchtime 1x -timeout 5m ./internal/sensor/
	@echo "bench-sensor: done $$(date -u +%FT%TZ), load average $$(cut -d' ' -f1-3 /proc/loadavg)"

# make verify also checks the BPF objects where clang-14 is installed.
verify: verify-bpf
