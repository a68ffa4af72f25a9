# `make demo`: a local control plane with simulated nodes, Bulkhead installed
# from config/, a sample shop, and a real attack trace replayed and contained.

.PHONY: demo
demo: kube-binaries kwok build ## Run the demo: detect, contain and release a compromised pod on a local cluster.
	go run ./hack/demo $(DEMO_ARGS)

.PHONY: cluster-up
cluster-up: kube-binaries kwok ## Start a local control plane with kwok nodes and wait (Ctrl-C stops it).
	go run ./hack/demo --cluster-only

# .ci/run runs every ci-* target: the demo must keep working.
.PHONY: ci-demo
ci-demo: demo
