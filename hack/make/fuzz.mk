# Fuzzing: every Go fuzz target in the repository (found, not listed: a new
# FuzzXxx is picked up), FUZZTIME each.
#
# Corpora. Each target starts from its f.Add seeds plus the corpus checked in
# under <pkg>/testdata/fuzz/<Target>/. Plain `go test` (so `make test`) runs
# every checked-in entry as a regression input, so a crasher written there by
# a fuzzing run fails `make test` until the decoder is fixed. Once fixed, keep
# the crasher under a descriptive name (crash-<what>): files whose name is not
# all lowercase hex are pinned, and fuzz-corpus never removes them.
#
# `make fuzz-corpus FUZZTIME=3m` refreshes the corpora: it fuzzes every target
# for FUZZTIME (new inputs go to the fuzz cache, $(go env GOCACHE)/fuzz), then
# `fuzz-minimize` replaces the hash-named corpus files of each target with a
# small subset of cache + corpus that adds coverage: it measures the coverage
# of the seeds and pinned files, then of each candidate alone (in the package
# and in FUZZ_COVERPKG: what the decoders parse with), and greedily keeps the
# candidate adding the most uncovered blocks (the smaller on ties) until none
# adds any; seeds + kept files cover exactly what seeds + all candidates do.
# A candidate that fails is a crasher and is kept. FUZZ=<regexp> restricts
# any of these targets to matching "<dir> <Target>" lines.

# FUZZTIME (default 10s per target; a count such as 10000x works too) is set
# once, in detection.mk, which is included first and whose fuzz-ingest uses
# it too.
# Time spent shrinking each new interesting input: Go's default (60s) can eat
# a whole short budget on the kilobyte-sized sample seeds.
FUZZMINIMIZETIME ?= 5s
FUZZ_PARALLEL ?= 2
FUZZ ?= .
# Packages whose coverage fuzz-minimize also counts (the package under test
# always is): the parsers the decoders hand their input to.
FUZZ_COVERPKG ?= encoding/json,strconv,time,mime,github.com/cloudevents/sdk-go/v2/...

# "<dir> <Target>" for every fuzz target matching FUZZ.
FUZZ_LIST = grep -rl --include='*_test.go' '^func Fuzz' internal cmd api 2>/dev/null | xargs -rn1 dirname | sort -u | \
	while read -r dir; do for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2 | sort -u); do \
	  echo "$$dir $$t"; done; done | { grep -E -- '$(FUZZ)' || true; }

##@ Fuzzing

.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZTIME each, from its seeds and checked-in corpus.
	@set -e; $(FUZZ_LIST) | while read -r dir t; do \
	  n=$$( (ls $$dir/testdata/fuzz/$$t 2>/dev/null || true) | wc -l); \
	  echo ">> ./$$dir $$t ($(FUZZTIME), corpus: $$n files in $$dir/testdata/fuzz/$$t)"; \
	  go test ./$$dir -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) -parallel $(FUZZ_PARALLEL) </dev/null || exit 1; \
	done

# CI budgets by executions, not seconds: with a duration, Go 1.26's fuzz
# coordinator can fail a target with "context deadline exceeded" at the
# deadline though nothing crashed (go.dev/issue/75804, fixed in Go 1.27); a
# count sets no deadline. 10,000 executions take 3-8 s a target here.
.PHONY: ci-fuzz
ci-fuzz: ## Short fuzzing pass for CI: every fuzz target for 10,000 executions.
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10000x FUZZMINIMIZETIME=2s

.PHONY: fuzz-corpus
fuzz-corpus: ## Refresh the checked-in corpora: fuzz (FUZZTIME each), then fuzz-minimize.
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory fuzz-minimize

.PHONY: fuzz-minimize
fuzz-minimize: ## Rewrite each testdata/fuzz/<Target>/ as a greedy coverage-preserving subset of fuzz cache + corpus.
	@bash -c "$$FUZZ_MINIMIZE_SH" fuzz-minimize "$(FUZZ_COVERPKG)" < <($(FUZZ_LIST))

# The minimiser: reads "<dir> <Target>" lines; $1 is FUZZ_COVERPKG.
define fuzz_minimize_sh
set -euo pipefail
covpkg=$1
root=$PWD
cache=$(go env GOCACHE)/fuzz
work=$(mktemp -d)
trap '[ -n "${FUZZ_KEEPWORK:-}" ] && echo "work dir: $work" || rm -rf "$work"' EXIT
ishex() { case $1 in '' | *[!0-9a-f]*) return 1 ;; esac; }
# Blocks of strconv/quote.go are left out: the test binary runs them to parse
# the corpus files themselves.
# stmts <pkg> <profile>...: "covered total" statements, in <pkg> (or all: "").
stmts() {
  local p=$1; shift
  awk -v p="$p" 'FNR > 1 && $1 !~ /^strconv\/quote\.go:/ && (p == "" || index($1, p "/") == 1 && index(substr($1, length(p) + 2), "/") == 0) {
      t[$1] = $2; if ($NF > 0) c[$1] = $2 }
    END { for (b in t) tt += t[b]; for (b in c) cc += c[b]; printf "%d %d", cc, tt }' "$@"
}
# rundir <name>: a directory standing in for the package dir, with its
# testdata (but an empty testdata/fuzz) linked in.
rundir() {
  local r=$work/$1
  mkdir -p "$r/testdata/fuzz/$t"
  for e in "$root/$dir"/testdata/*; do
    [ -e "$e" ] && [ "$(basename "$e")" != fuzz ] && ln -s "$e" "$r/testdata/"
  done
  echo "$r"
}
declare -A built
while read -r dir t; do
  pkg=$(go list "./$dir")
  bin=$work/$(echo "$dir" | tr / _).test
  if [ -z "${built[$dir]:-}" ]; then
    echo ">> building ./$dir with coverage of ./$dir,$covpkg"
    go test -c -o "$bin" -cover -covermode=set -coverpkg="./$dir${covpkg:+,$covpkg}" "./$dir" 2>&1 | { grep -v '^warning: no packages being tested depend on' || true; }
    built[$dir]=1
  fi
  out=$root/$dir/testdata/fuzz/$t
  # base: seeds and pinned files; cand: all candidates; one: a candidate at
  # a time (alone, so that parsing the others is not counted); final: kept.
  base=$(rundir "$t.base") cand=$(rundir "$t.cand") one=$(rundir "$t.one") final=$(rundir "$t.final")
  prof=$work/$t.prof
  mkdir -p "$prof"
  # Pinned files are part of the baseline; hash-named ones are candidates.
  for f in "$out"/* "$cache/$pkg/$t"/*; do
    [ -f "$f" ] || continue
    n=$(basename "$f")
    if ishex "$n"; then cp "$f" "$cand/testdata/fuzz/$t/"; else cp "$f" "$base/testdata/fuzz/$t/"; cp "$f" "$final/testdata/fuzz/$t/"; fi
  done
  (cd "$base" && "$bin" -test.run "^$t\$" -test.coverprofile "$prof/base" >/dev/null) || {
    echo "!! $t: the seeds or pinned files fail; fix that first"; exit 1; }
  : > "$work/$t.keep"
  ncand=0
  for f in "$cand/testdata/fuzz/$t"/*; do
    [ -f "$f" ] || continue
    n=$(basename "$f"); ncand=$((ncand + 1))
    rm -f "$one/testdata/fuzz/$t"/*; cp "$f" "$one/testdata/fuzz/$t/"
    if ! (cd "$one" && "$bin" -test.run "^$t\$/^$n\$" -test.coverprofile "$prof/c.$n" >/dev/null 2>&1); then
      echo "!! $t: $n fails (a crasher): kept; fix the code, then rename it crash-<what>"
      echo "$n" >> "$work/$t.keep"; rm -f "$prof/c.$n"
    fi
  done
  # Greedy set cover of the blocks the baseline leaves uncovered.
  for p in "$prof"/c.*; do
    [ -f "$p" ] || continue
    n=${p##*/c.}
    awk -v e="$n" -v s="$(wc -c < "$cand/testdata/fuzz/$t/$n")" 'FNR > 1 && $1 !~ /^strconv\/quote\.go:/ && $NF > 0 { print e, s, $1 }' "$p"
  done > "$work/$t.cov"
  awk 'FNR > 1 && $1 !~ /^strconv\/quote\.go:/ && $NF > 0 { print "base", 0, $1 }' "$prof/base" |
    awk '$1 == "base" { have[$3] = 1; next }
      { if (!($1 in size)) { size[$1] = $2; ents[++ne] = $1 }; blocks[$1] = blocks[$1] " " $3 }
      END {
        for (;;) {
          best = ""; bg = 0
          for (i = 1; i <= ne; i++) {
            e = ents[i]; if (e in picked) continue
            n = split(blocks[e], bs, " "); g = 0
            for (j = 1; j <= n; j++) if (!(bs[j] in have)) g++
            if (g > bg || (g == bg && g > 0 && size[e] < size[best])) { best = e; bg = g }
          }
          if (bg == 0) break
          picked[best] = 1; print best
          n = split(blocks[best], bs, " "); for (j = 1; j <= n; j++) have[bs[j]] = 1
        }
      }' - "$work/$t.cov" >> "$work/$t.keep"
  while read -r n; do cp "$cand/testdata/fuzz/$t/$n" "$final/testdata/fuzz/$t/"; done < "$work/$t.keep"
  (cd "$final" && "$bin" -test.run "^$t\$" -test.coverprofile "$prof/final" >/dev/null 2>&1) || true
  # Write back: pinned files stay, hash-named ones are replaced.
  mkdir -p "$out"
  for f in "$out"/*; do [ -f "$f" ] && ishex "$(basename "$f")" && rm -f "$f"; done
  while read -r n; do cp "$cand/testdata/fuzz/$t/$n" "$out/"; done < "$work/$t.keep"
  read -r sb tb <<< "$(stmts "$pkg" "$prof/base")"
  read -r sf _ <<< "$(stmts "$pkg" "$prof/final")"
  read -r sa _ <<< "$(stmts "$pkg" "$prof/base" "$prof"/c.*)"
  read -r xb xt <<< "$(stmts "" "$prof/base")"
  read -r xf _ <<< "$(stmts "" "$prof/final")"
  read -r xa _ <<< "$(stmts "" "$prof/base" "$prof"/c.*)"
  kept=$(wc -l < "$work/$t.keep")
  size=$(cat "$out"/* 2>/dev/null | wc -c)
  echo "== $dir $t: kept $kept of $ncand candidates ($(ls "$out" | wc -l) files, $size bytes)"
  echo "   statements covered in $pkg: seeds/pinned $sb, with corpus $sf, with all candidates $sa (of $tb)"
  echo "   statements covered in it and $covpkg: seeds/pinned $xb, with corpus $xf, with all candidates $xa (of $xt)"
done
endef
fuzz-minimize: export FUZZ_MINIMIZE_SH := $(value fuzz_minimize_sh)
