#!/usr/bin/env bash
# `make test`: set-up, pytest, R CMD build + check (R tests, examples, vignette).
# Prints the time of each phase at the end, also when a phase fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# the README's test command and CI are the same check: a missing backend (Python, R, rpy2) fails, never skips
export SIGEL_REQUIRE_BACKEND=1
PY="$ROOT/.venv/bin/python"
PHASES=$(mktemp)
trap 'rm -f "$PHASES"' EXIT
START=$EPOCHSECONDS
failed=()

phase() {  # phase NAME COMMAND...: run, record its time and status
    local name=$1 t0=$EPOCHSECONDS rc
    shift
    echo "==> $name"
    "$@"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" $((EPOCHSECONDS - t0)) "$([ $rc -eq 0 ] && echo ok || echo FAILED)" >>"$PHASES"
    [ $rc -eq 0 ] || failed+=("$name")
    return $rc
}

summary() {
    echo
    echo "== make test: time per phase ($(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)) =="
    awk -F'\t' '{ if (NF >= 3) printf "  %-58s %5d s  %s\n", $1, $2, $3; else printf "      %-54s %5d s\n", $1, $2 }' "$PHASES"
    printf '  %-58s %5d s\n' "total" $((EPOCHSECONDS - START))
}

phase "set-up (scripts/setup.sh)" bash scripts/setup.sh || { summary; exit 1; }
phase "pytest (tests/python + docstring examples)" "$PY" -m pytest -q
SUB=$(mktemp)
SIGEL_PHASE_FILE="$SUB" phase "R CMD build + check (scripts/check-r.sh)" bash scripts/check-r.sh
cat "$SUB" >>"$PHASES"
rm -f "$SUB"
summary
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
