# Chaos: containments and releases on a local control plane while the
# manager is SIGKILLed at random instants (and kube-apiserver restarted
# once), then leader election with two replicas and the leader killed.
# Flood: 10,000 high scores for 1,000 pods against the safeguards.

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
	go test -tags chaos ./test/flood/ -count=1 -v -timeout 20m
