#!/usr/bin/env bash
# R CMD build + R CMD check --no-manual; fails on any ERROR or WARNING.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export SIGEL_PYTHON="${SIGEL_PYTHON:-$ROOT/.venv/bin/python}"
R CMD build "$ROOT" >build.log 2>&1 || { cat build.log; exit 1; }
TARBALL=$(ls sigel_*.tar.gz)
_R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual "$TARBALL" >check.log 2>&1 || true
cat check.log | tail -40
# what the NOTEs and WARNINGs say (the tail above only names them)
grep -A6 -E "\.\.\. (NOTE|WARNING)$" sigel.Rcheck/00check.log 2>/dev/null || true
if grep -qE "^Status:.*(ERROR|WARNING)" check.log || ! grep -q "^Status:" check.log; then
  echo "R CMD check failed"; for f in sigel.Rcheck/00check.log sigel.Rcheck/tests/testthat.Rout.fail; do [ -f "$f" ] && tail -60 "$f"; done
  exit 1
fi
echo "R CMD check passed"
