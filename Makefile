# matbench — run `make help` for the targets.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.matbench-installed
CORE_STAMP := $(VENV)/.matbench-core-installed

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format demo bench docs golden cli-help clean

help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $@ $(CORE_STAMP)

# The demo needs only the core dependencies: a much shorter install from nothing.
$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

install: $(STAMP) ## Create .venv and install matbench (editable, with every optional extra, test and docs tools)

test: install ## Run the whole test suite (CPU)
	$(PY) -m pytest

test-fast: install ## Run the tests, skipping multi-process DDP runs
	$(PY) -m pytest -m "not ddp"

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

demo: $(CORE_STAMP) ## The main job: generate MatSeg data, train a U-Net on CPU, test it vs baselines (core install only)
	$(VENV)/bin/matbench demo --out demo_out

bench: install ## Speed benchmarks (ratios measured side by side)
	@set -e; for f in benchmarks/[!_]*.py; do m=$$(basename $$f .py); echo "== benchmarks.$$m"; $(PY) -m benchmarks.$$m; done

golden: install ## Rewrite tests/golden/*.json from the current code (review the diff, then commit)
	MATBENCH_UPDATE_GOLDEN=1 $(PY) -m pytest tests/golden/test_golden.py -q

docs: install ## Build the documentation site into site/ (warnings are errors)
	$(VENV)/bin/mkdocs build --strict -d site

cli-help: install ## Regenerate the shipped `matbench fit/validate/test/predict --help` pages (after a change to tasks, datamodules, callbacks or the run options)
	$(PY) -m matbench.cli_help --write

clean: ## Remove logs, results and demo output
	rm -rf logs lightning_logs results demo_out site
