# Fuzzing: every Go fuzz target in the repository (found, not listed: a new
# FuzzXxx is picked up), FUZZTIME each. Seeds come from each package's
# testdata (testdata/fuzz corpora and f.Add); a crasher is written to the
# package's testdata/fuzz/<target>/ and then fails `make test` as a
# regression test until fixed.

FUZZTIME ?= 30s

##@ Fuzzing

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s).
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' internal cmd api 2>/dev/null | xargs -n1 dirname | sort -u | while read -r dir; do \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2 | sort -u); do \
	    echo ">> ./$$dir $$t ($(FUZZTIME))"; \
	    go test ./$$dir -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -parallel 2 || exit 1; \
	  done; done

.PHONY: ci-fuzz
ci-fuzz: ## Short fuzzing pass for CI: every fuzz target for 5s.
	@$(MAKE) --no-print-directory fuzz FUZZTIME=5s
