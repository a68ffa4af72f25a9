# `make demo`: a local control plane with simulated nodes, Bulkhead installed
# from config/, a sample shop, and one pod scored, quarantined, isolated and
# released. Live (the node sensor on this kernel) where root with cgroup v2
# and BTF, else (or with DEMO_FORCE_REPLAY=1) a replay of a shipped recording
# of it; nothing outside the clone is read.

.PHONY: demo
demo: kube-binaries kwok build ## Run the demo: detect, contain and release a compromised pod on a local cluster.
	go run ./hack/demo $(DEMO_ARGS)

.PHONY: demo-record
demo-record: kube-binaries kwok build ## Re-record hack/demo/testdata/sensor-recording.jsonl from a live run (root with BPF).
	go run ./hack/demo --mode=live --record hack/demo/testdata/sensor-recording.jsonl $(DEMO_ARGS)

.PHONY: cluster-up
cluster-up: kube-binaries kwok ## Start a local control plane with kwok nodes and wait (Ctrl-C stops it).
	go run ./hack/demo --cluster-only

# .ci/run runs every ci-* target: both modes must keep working (CI is root
# with BPF, so `demo` is the live mode there).
.PHONY: ci-demo
ci-demo: demo
	DEMO_FORCE_REPLAY=1 go run ./hack/demo $(DEMO_ARGS)
