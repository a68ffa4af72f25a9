##@ Detection

FUZZTIME ?= 10s
INGEST_FUZZ_TARGETS := FuzzDecodeScores FuzzDecodeFalco FuzzDecodeTetragon FuzzDecodeAlertmanager FuzzDecodeSyscalls FuzzDecodeCloudEvent

.PHONY: fuzz-ingest
fuzz-ingest: ## Fuzz every ingestion decoder for FUZZTIME each (seeds: internal/detection/testdata/samples).
	@for t in $(INGEST_FUZZ_TARGETS); do \
	  echo ">> $$t"; go test ./internal/detection/ -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; done

.PHONY: bench-ingest
bench-ingest: kube-binaries ## Decoder throughput, events/s one core ingests and scores, and score-to-Quarantine latency (envtest).
	go test ./internal/detection/ -run '^$$' -bench BenchmarkDecode -benchtime 1s
	go test ./internal/controller/podresponse/ -run '^$$' -bench . -benchtime 2s -cpu 1
