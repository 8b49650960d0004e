#!/usr/bin/env bash
# Idempotent set-up for sigel: Debian R packages, the project venv (.venv) with
# the pins of STACK.md, the Python package (editable) and the R package.
# A second run only checks (stamps keyed by the content of what they install).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$VENV/.sigel-stamps"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { printf '[setup] %s\n' "$*"; }

# ---- 1. Debian packages (R before pip: rpy2 builds against R) ---------------
APT_PKGS="r-base-core r-base-dev r-cran-reticulate r-cran-testthat r-cran-matrix \
 r-bioc-singlecellexperiment r-bioc-summarizedexperiment \
 r-cran-seurat r-cran-seuratobject r-cran-knitr r-cran-rmarkdown \
 r-bioc-biocstyle r-cran-ggplot2 pandoc r-cran-jsonlite r-cran-patchwork \
 r-bioc-org.hs.eg.db r-bioc-go.db r-bioc-gosemsim r-cran-roxygen2 \
 libpcre2-dev libblas-dev liblapack-dev"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  say "Debian packages: ok"
fi

# ---- 2. Python venv with pinned stack --------------------------------------
PY="${SIGEL_BASE_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
req_hash=$(cat requirements.txt pyproject.toml | sha1sum | cut -c1-16)
if [ ! -f "$STAMPS/pip-$req_hash" ]; then
  say "installing Python requirements (requirements.txt)"
  TORCH_WHL=$(ls /opt/wheels/torch-2.13.0*cp311*.whl 2>/dev/null | head -1 || true)
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  # torch first, from the local CPU wheel when present (avoids GBs of CUDA wheels)
  "$VENV/bin/pip" install -q ${TORCH_WHL:-torch==2.13.0}
  "$VENV/bin/pip" install -q --no-cache-dir -r requirements.txt
  "$VENV/bin/pip" install -q --no-deps -e .
  rm -f "$STAMPS"/pip-*; touch "$STAMPS/pip-$req_hash"
else
  say "Python environment: ok"
fi
"$VENV/bin/python" -c "import sigel, torch, numpy, anndata" \
  || { say "ERROR: the venv cannot import sigel"; exit 1; }

# ---- 3. R package -----------------------------------------------------------
r_hash=$( (cat DESCRIPTION NAMESPACE; find R inst -type f -print0 | sort -z | xargs -0 cat) | sha1sum | cut -c1-16)
if [ ! -f "$STAMPS/r-$r_hash" ] || ! Rscript -e 'quit(status = !requireNamespace("sigel", quietly = TRUE))' >/dev/null 2>&1; then
  say "installing the R package"
  R CMD INSTALL --no-test-load . >/dev/null 2>"$VENV/.sigel-r-install.log" || { cat "$VENV/.sigel-r-install.log"; exit 1; }
  rm -f "$STAMPS"/r-*; touch "$STAMPS/r-$r_hash"
else
  say "R package: ok"
fi

# ---- 4. Tell the R package which Python to use -----------------------------
# The installed R package reads this file (and SIGEL_PYTHON / options override it).
RLIB=$(Rscript -e 'cat(find.package("sigel"))')
echo "$VENV/bin/python" > "$RLIB/python-path"
say "R package uses $VENV/bin/python"
say "done"
