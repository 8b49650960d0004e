# The README's two commands: `make demo` and `make test`. Both run the set-up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= demo_out

.PHONY: setup demo test test-python test-r check-r docs

setup:
	@bash scripts/setup.sh

## set-up, then the main job on the bundled mouse olfactory bulb data
demo: setup
	$(VENV)/bin/sigel demo --out $(OUT)

## set-up, then all tests: pytest, then R CMD build + check (which runs the
## R testthat suite, the examples and the vignette against the real backend);
## prints the time of each phase at the end (scripts/test.sh)
test:
	bash scripts/test.sh

test-python:
	$(PY) -m pytest -q

test-r:
	SIGEL_PYTHON=$(abspath $(PY)) Rscript -e 'testthat::test_local(".", reporter = "summary", stop_on_failure = TRUE)'

check-r:
	bash scripts/check-r.sh

## regenerate NAMESPACE and man/ from roxygen comments
docs:
	Rscript -e 'roxygen2::roxygenise()'
