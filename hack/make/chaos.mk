# Chaos: containments and releases on a local control plane while the
# manager is SIGKILLed at random instants (and kube-apiserver restarted
# once), then leader election with two replicas and the leader killed.
# Flood: 10,000 high scores for 1,000 pods against the safeguards; and the
# ingest port flooded before authentication.

CHAOS_TIMEOUT ?= 40m

##@ Chaos and flood

.PHONY: test-chaos
test-chaos: kube-binaries kwok build ## Full chaos: 100 containments/releases under manager SIGKILLs + one API server restart; leader handover with two replicas.
	CHAOS_CONTAINMENTS=$(or $(CHAOS_CONTAINMENTS),100) go test -tags chaos ./test/chaos/ -count=1 -v -timeout $(CHAOS_TIMEOUT)

.PHONY: ci-chaos
ci-chaos: kube-binaries kwok build ## Smoke chaos (20 containments under kills + API server restart; leader handover with short lease timings).
	CHAOS_CONTAINMENTS=20 CHAOS_SHORT_LEASE=1 go test -tags chaos ./test/chaos/ -count=1 -v -timeout 15m

.PHONY: test-flood
test-flood: kube-binaries kwok build ## 10,000 high scores for 1,000 pods within seconds: budgets, cluster cap, protected namespaces, peak manager memory.
	go test -tags chaos ./test/flood/ -run 'TestFlood$$' -count=1 -v -timeout 20m

.PHONY: test-ingest-flood
test-ingest-flood: kube-binaries kwok build ## Unauthenticated, oversized and half-sent requests flood the ingest port while a real score still contains its pod; manager heap bounded and reported.
	go test -tags chaos ./test/flood/ -run 'TestIngestFlood$$' -count=1 -v -timeout 10m
