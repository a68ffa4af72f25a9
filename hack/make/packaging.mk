##@ Packaging

# The install artefacts are rendered from config/ by one generator
# (hack/packaging/cmd/bulkhead-package, its own Go module so Helm's and
# operator-framework/api's k8s.io versions never touch the manager's), which
# also holds the checks of what it renders (bundle validators, Helm lint).
# It embeds the kustomize API, so no kustomize binary is needed. All three
# targets write all artefacts: they must never disagree.
PACKAGING_DIR := hack/packaging
PACKAGE_GEN := cd $(PACKAGING_DIR) && go run ./cmd/bulkhead-package -root $(CURDIR)

.PHONY: build-installer
build-installer: ## Render config/default into dist/install.yaml (and the bundle and chart).
	$(PACKAGE_GEN)

.PHONY: bundle
bundle: ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/.
	$(PACKAGE_GEN)

.PHONY: helm-chart
helm-chart: ## Generate the Helm chart in dist/chart from config/.
	$(PACKAGE_GEN)

.PHONY: verify-packaging
verify-packaging: ## Fail when dist/install.yaml, bundle/ or dist/chart are stale.
	$(PACKAGE_GEN) -check

.PHONY: test-packaging
test-packaging: kube-binaries kwok build ## Bundle validation, Helm lint and render, RBAC and alert checks; install, admission-policy and sample tests in envtest; the OLM bundle installed on a local control plane accepts a signal with the CSV's arguments.
	cd $(PACKAGING_DIR) && go test ./... -count=1 -timeout 10m
	go test ./test/install/... -count=1 -timeout 10m
	go test -tags packaging ./test/olm/ -count=1 -v -timeout 10m

.PHONY: bundle-build
bundle-build: ## Build the bundle image (needs a Docker engine).
	docker build -f bundle.Dockerfile -t $(subst bulkhead:,bulkhead-bundle:,$(IMG)) .

# Run by .ci/run (every ci-* target is): the generated artefacts are up to
# date, and the packaging module (its own go.mod, so `make vet` and `make
# test` do not reach it) is formatted, vetted and tested. test/install is in
# the main module and already runs under `make test`.
.PHONY: ci-packaging
ci-packaging: kube-binaries kwok build verify-packaging
	@out=$$(gofmt -l $(PACKAGING_DIR)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	cd $(PACKAGING_DIR) && go vet ./... && go test ./... -count=1 -timeout 10m
	@# The OLM bundle installed on a local control plane accepts a signal.
	go test -tags packaging ./test/olm/ -count=1 -v -timeout 10m
