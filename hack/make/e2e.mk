# End-to-end tests on a real local control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) with kwok-simulated nodes; the
# manager runs as a local process under its ServiceAccount's token.

KWOK_VERSION := $(shell grep -Eo 'sigs.k8s.io/kwok v[^ ]+' hack/kwok/go.mod | cut -d' ' -f2)
KWOK_DIR := $(LOCALBIN)/kwok/$(KWOK_VERSION)
export KWOK_BIN := $(KWOK_DIR)/kwok
export KUBE_BIN
export BULKHEAD_BIN := $(LOCALBIN)/bulkhead
E2E_TIMEOUT ?= 20m

# kwok's node and pod lifecycles ("fast": nodes Ready at once, pods Running
# as soon as they are scheduled, deleted pods gone at once; node leases kept).
KWOK_STAGES := node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
	pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml

##@ End-to-end

.PHONY: kwok
kwok: $(KWOK_DIR)/.built ## Build kwok (simulated nodes and pods) from the module proxy.

$(KWOK_DIR)/.built: hack/kwok/go.mod hack/kwok/go.sum
	@echo ">> building kwok $(KWOK_VERSION) into $(KWOK_DIR) (first run only, about 2 minutes)"
	@mkdir -p $(KWOK_DIR)
	cd hack/kwok && go build -trimpath -ldflags "-s -w" -o $(KWOK_BIN) sigs.k8s.io/kwok/cmd/kwok
	@src=$$(cd hack/kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok); \
	  for f in $(KWOK_STAGES); do echo "---"; cat "$$src/kustomize/stage/$$f"; done > $(KWOK_DIR)/stages.yaml
	@touch $@

.PHONY: test-e2e
test-e2e: kube-binaries kwok build ## End-to-end scenarios against a local control plane with kwok nodes.
	@echo ">> e2e: KUBE_BIN=$(KUBE_BIN) KWOK_BIN=$(KWOK_BIN) BULKHEAD_BIN=$(BULKHEAD_BIN)"
	go test -tags e2e ./test/e2e/ -count=1 -v -timeout $(E2E_TIMEOUT) $(E2E_ARGS)

# .ci/run runs every ci-* target.
.PHONY: ci-e2e
ci-e2e: test-e2e

.PHONY: test-e2e-sensor
test-e2e-sensor: kube-binaries kwok build ## The real-kernel sensor scenario (root, BPF): servers in kubelet-style cgroups, attacks, kernel isolation, shared baselines (about 5 minutes).
	BULKHEAD_E2E_SENSOR=1 go test -tags e2e ./test/e2e/ -run TestSensorEndToEnd -count=1 -v -timeout 15m

# CI is root with BPF (Linux 6.18): the scenario runs there, it does not skip.
.PHONY: ci-e2e-sensor
ci-e2e-sensor: test-e2e-sensor
