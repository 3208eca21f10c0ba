# Herald: `make run` starts the platform on the embedded broker, `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_DIR := .npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed
VIEWER := src/herald/asyncapi/viewer

.PHONY: run test lint format bench bench-more soak clean install

install: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

# AsyncAPI: the official parser (tests validate documents with it) and the React
# component's standalone bundle, which `herald docs serve` serves (no CDN). Versions are
# pinned in .npm/package-lock.json; needs Node 20 and npm.
$(NPM_STAMP): $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VIEWER)
	cp $(NPM_DIR)/node_modules/@asyncapi/react-component/browser/standalone/index.js \
	   $(NPM_DIR)/node_modules/@asyncapi/react-component/styles/default.min.css $(VIEWER)/
	touch $(NPM_STAMP)

run: $(STAMP)
	$(VENV)/bin/herald demo

test: $(STAMP) $(NPM_STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# The suites, the cost-model sweeps and memory, into docs/performance.md (+ PNG plots).
# Sizes are options of `python -m benchmarks.costmodel --help`.
bench: $(STAMP)
	$(PY) -m benchmarks.costmodel

bench-more: $(STAMP)
	$(PY) -m benchmarks.rpc_bench
	$(PY) -m benchmarks.outbox_bench
	$(PY) -m benchmarks.hrweb_bench

soak: $(STAMP)
	$(PY) -m pytest -m soak --run-soak -rP

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache $(NPM_DIR)/node_modules $(VIEWER)
