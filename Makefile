# Bulkhead Makefile. Tools are pinned and built from the Go module proxy into
# ./bin (git-ignored); nothing is downloaded from release pages.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= ghcr.io/bulkhead-dev/bulkhead:v0.1.0
LOCALBIN ?= $(CURDIR)/bin
export GOBIN := $(LOCALBIN)

## Pinned tool versions.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE_VERSION ?= v5.8.2

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
KUSTOMIZE ?= $(LOCALBIN)/kustomize

## Control-plane binaries match go.mod's k8s.io libraries: k8s.io/api v0.X.Y
## pairs with Kubernetes v1.X.Y. hack/kube/go.mod pins the same version.
K8S_API_VERSION := $(shell go list -m -f '{{.Version}}' k8s.io/api)
KUBE_VERSION := $(patsubst v0.%,v1.%,$(K8S_API_VERSION))
KUBE_BIN := $(LOCALBIN)/kube/$(KUBE_VERSION)
KUBE_STAMP := $(KUBE_BIN)/.built
export KUBEBUILDER_ASSETS := $(KUBE_BIN)

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./internal/..." paths="./cmd/..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet (including build-tagged e2e code).
	go vet ./...
	go vet -tags e2e,chaos,bench ./test/...

.PHONY: test
test: kube-binaries ## Unit tests and envtest suites against a real kube-apiserver and etcd.
	@echo ">> go test (KUBEBUILDER_ASSETS=$(KUBEBUILDER_ASSETS))"
	go test ./... -count=1 -timeout 30m

.PHONY: lint
lint: golangci-lint ## golangci-lint v2.
	$(GOLANGCI_LINT) run --timeout 15m --build-tags e2e,chaos,bench ./...

.PHONY: verify
verify: manifests generate ## Fail when generated files (CRDs, RBAC, deepcopy) are stale.
	@if [ -n "$$(git status --porcelain -- api config/crd config/rbac)" ]; then \
	  echo "generated files are stale; run 'make manifests generate' and commit:"; \
	  git status --porcelain -- api config/crd config/rbac; git --no-pager diff --stat -- api config/crd config/rbac; exit 1; fi
	@echo "generated files are up to date"

##@ Build

.PHONY: build
build: ## Build the manager binary.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/bulkhead ./cmd

.PHONY: run
run: manifests generate ## Run the manager against the current kubeconfig.
	go run ./cmd

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Tools

.PHONY: kube-binaries
kube-binaries: $(KUBE_STAMP) ## Build etcd, kube-apiserver, controller-manager, scheduler and kubectl from the module proxy.

$(KUBE_STAMP): hack/kube/go.mod
	@grep -q "k8s.io/kubernetes $(KUBE_VERSION)" hack/kube/go.mod || { echo "hack/kube/go.mod must pin k8s.io/kubernetes $(KUBE_VERSION) to match go.mod's k8s.io/api $(K8S_API_VERSION)"; exit 1; }
	@echo ">> building control-plane binaries $(KUBE_VERSION) into $(KUBE_BIN) (first run only, several minutes)"
	@mkdir -p $(KUBE_BIN)
	cd hack/kube && go build -trimpath -ldflags "-s -w \
	  -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	  -X k8s.io/component-base/version.gitMajor=1 \
	  -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) \
	  -X k8s.io/component-base/version.gitTreeState=clean" \
	  -o $(KUBE_BIN)/ \
	  go.etcd.io/etcd/server/v3 \
	  k8s.io/kubernetes/cmd/kube-apiserver \
	  k8s.io/kubernetes/cmd/kube-controller-manager \
	  k8s.io/kubernetes/cmd/kube-scheduler \
	  k8s.io/kubernetes/cmd/kubectl
	mv -f $(KUBE_BIN)/server $(KUBE_BIN)/etcd
	@touch $@
	@ls -la $(KUBE_BIN)

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# Each area's targets, listed so the order never depends on a glob. A new
# hack/make/*.mk must be added here: make stops until it is. .ci/run runs the
# ci-* targets of exactly these files (make ci-targets).
MAKE_INCLUDES := \
	hack/make/behavior.mk \
	hack/make/bench.mk \
	hack/make/chaos.mk \
	hack/make/containment.mk \
	hack/make/demo.mk \
	hack/make/detection.mk \
	hack/make/e2e.mk \
	hack/make/fuzz.mk \
	hack/make/packaging.mk \
	hack/make/plugin.mk \
	hack/make/sensor.mk
MAKE_UNLISTED := $(filter-out $(MAKE_INCLUDES),$(wildcard hack/make/*.mk))
ifneq ($(MAKE_UNLISTED),)
$(error $(MAKE_UNLISTED): not in the Makefile's MAKE_INCLUDES; add it there)
endif
include $(MAKE_INCLUDES)

##@ CI

.PHONY: ci-targets
ci-targets: ## List the ci-* targets .ci/run runs after the test stage.
	@awk -F: '/^ci-[a-z0-9-]+:/ {print $$1}' $(MAKE_INCLUDES) | sort -u
