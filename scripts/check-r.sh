#!/usr/bin/env bash
# R CMD build + R CMD check --no-manual; fails on any ERROR or WARNING.
# The vignette is built (its code run) once by R CMD build; the check runs its
# R code again but does not re-build it (--no-build-vignettes).
# Prints how long each step of the check took; with SIGEL_PHASE_FILE set,
# also appends "name<TAB>seconds" lines there (scripts/test.sh prints them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export SIGEL_PYTHON="${SIGEL_PYTHON:-$ROOT/.venv/bin/python}"
PHASES="${SIGEL_PHASE_FILE:-/dev/null}"

t0=$EPOCHSECONDS
R CMD build "$ROOT" >build.log 2>&1 || { cat build.log; exit 1; }
printf 'R CMD build (builds the vignette)\t%s\n' $((EPOCHSECONDS - t0)) >>"$PHASES"
TARBALL=$(ls sigel_*.tar.gz)

# every output line with the second it appeared, for the step times below
t0=$EPOCHSECONDS
{ _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --no-build-vignettes --timings "$TARBALL" 2>&1 || true; } |
  while IFS= read -r line; do printf '%(%s)T\t%s\n' -1 "$line"; done >check.tlog
t_check=$((EPOCHSECONDS - t0))
cut -f2- check.tlog >check.log
tail -40 check.log
# what the NOTEs and WARNINGs say (the tail above only names them)
grep -A6 -E "\.\.\. (NOTE|WARNING)$" sigel.Rcheck/00check.log 2>/dev/null || true

# step times. R CMD check prints "* checking X ... OK" when X is done: such a
# step runs from the last line of the step before it to its own line; a step
# printed as "* checking X ..." (results on later lines) starts at that line.
STEPS='BEGIN { FS = "\t" }
  /^[0-9]+\t\* / { if (name != "") d[name] += last - start
                   start = ($2 ~ / \.\.\. *$/ || last == "") ? $1 : last
                   name = substr($2, 3); sub(/ \.\.\..*/, "", name) }
  { last = $1 }
  END { if (name != "") d[name] += last - start; for (n in d) print d[n] "\t" n }'
echo
echo "R CMD check steps taking 3 s or more:"
awk "$STEPS" check.tlog | sort -rn | awk -F'\t' '$1 >= 3 { printf "%6d s  %s\n", $1, $2 }'
printf 'R CMD check (install, tests, examples, vignette code)\t%s\n' "$t_check" >>"$PHASES"
awk "$STEPS" check.tlog | awk -F'\t' '$2 ~ /^checking (tests|examples|whether package .* can be installed|running R code from vignettes)/ { printf "  %s\t%d\n", $2, $1 }' >>"$PHASES"
if [ -f sigel.Rcheck/sigel-Ex.timings ]; then
  echo "Slowest examples (elapsed s):"
  awk 'NR > 1 { print $4, $1 }' sigel.Rcheck/sigel-Ex.timings | sort -rn | head -5 | sed 's/^/  /'
fi

if grep -qE "^Status:.*(ERROR|WARNING)" check.log || ! grep -q "^Status:" check.log; then
  echo "R CMD check failed"; for f in sigel.Rcheck/00check.log sigel.Rcheck/tests/testthat.Rout.fail; do [ -f "$f" ] && tail -60 "$f"; done
  exit 1
fi
echo "R CMD check passed"
