##@ kubectl plugin and notifications

.PHONY: build-plugin
build-plugin: ## Build the kubectl plugin into bin/kubectl-bulkhead (put bin/ on PATH, then `kubectl bulkhead list`).
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/kubectl-bulkhead ./cmd/kubectl-bulkhead

.PHONY: test-plugin
test-plugin: kube-binaries ## Run the kubectl plugin and notification suites (envtest and local HTTP sinks).
	go test ./internal/plugin/... ./internal/notify/... -count=1
