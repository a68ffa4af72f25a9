# Sensor: eBPF programs (C, CO-RE) compiled with clang-14 into objects that
# bpf2go embeds in generated Go files. Both are committed, so a Go build needs
# no clang; these targets regenerate and check them.

BPF_CLANG ?= clang-14
# What go generate writes: bpf2go's objects and bindings, any target.
BPF_GENERATED = ':(glob)internal/sensor/**/*_bpfe[bl].o' ':(glob)internal/sensor/**/*_bpfe[bl].go'
SENSOR_BENCH_COUNT ?= 5
SENSOR_BENCH_CALLS ?= 2000000x

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
bench-sensor: ## ns (wall and thread CPU) per getppid: no collector, empty sys_enter hook, collector with the cgroup untracked and tracked (root).
	go test -run '^$$' -bench SyscallOverhead -benchtime $(SENSOR_BENCH_CALLS) -count $(SENSOR_BENCH_COUNT) -timeout 10m ./internal/sensor/collect/

# make verify also checks the BPF objects where clang-14 is installed.
verify: verify-bpf
