# Herald: `make run` starts the platform on the embedded broker, `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_DIR := .npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed
VIEWER := src/herald/asyncapi/viewer
DASHBOARD_VENDOR := src/herald/dashboard/static/vendor

.PHONY: run test lint format bench bench-more soak clean install debian

install: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

# AsyncAPI: the official parser (tests validate documents with it) and the React
# component's standalone bundle, which `herald docs serve` serves; the dashboard's htmx
# (with its SSE extension) and uPlot, which `herald dashboard` serves (no CDN). Versions
# are pinned in .npm/package-lock.json; needs Node 20 and npm.
$(NPM_STAMP): $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VIEWER)
	cp $(NPM_DIR)/node_modules/@asyncapi/react-component/browser/standalone/index.js \
	   $(NPM_DIR)/node_modules/@asyncapi/react-component/styles/default.min.css $(VIEWER)/
	mkdir -p $(DASHBOARD_VENDOR)
	cp $(NPM_DIR)/node_modules/htmx.org/dist/htmx.min.js \
	   $(NPM_DIR)/node_modules/htmx-ext-sse/dist/sse.min.js \
	   $(NPM_DIR)/node_modules/uplot/dist/uPlot.iife.min.js \
	   $(NPM_DIR)/node_modules/uplot/dist/uPlot.min.css $(DASHBOARD_VENDOR)/
	touch $(NPM_STAMP)

run: $(STAMP) $(NPM_STAMP)
	$(VENV)/bin/herald demo

# Most tests wait on brokers and child processes, so three workers share two cores
# well. Tests that restart a shared broker run afterwards, alone. Broker clusters and
# network faults (tests/cluster) run with the soak: each starts several servers and
# waits out outages of tens of seconds.
TEST_WORKERS ?= 3

# Debian packages the tests drive for real: Ruby's Bunny client and protobuf library
# (wire interop) and Chromium (browser tests, through Playwright; never a downloaded
# browser). The benchmarks build a C client of RabbitMQ on librabbitmq.
DEBIAN_PACKAGES := ruby-bunny ruby-google-protobuf chromium
BENCH_DEBIAN_PACKAGES := librabbitmq-dev gcc

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; \
	fi
endef

debian:
	$(call apt_install,$(DEBIAN_PACKAGES))

test: $(STAMP) $(NPM_STAMP) debian lint
	@$(PY) -m pytest -n $(TEST_WORKERS) -m "not restart and not cluster"; first=$$?; \
	$(PY) -m pytest -m "restart and not cluster"; second=$$?; \
	test $$first -eq 0 && test $$second -eq 0

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
	$(call apt_install,$(BENCH_DEBIAN_PACKAGES))
	$(PY) -m benchmarks.costmodel

bench-more: $(STAMP)
	$(PY) -m benchmarks.rpc_bench
	$(PY) -m benchmarks.outbox_bench
	$(PY) -m benchmarks.hrweb_bench

soak: $(STAMP)
	$(PY) -m pytest -m "soak or cluster" --run-soak -rP

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache $(NPM_DIR)/node_modules $(VIEWER) $(DASHBOARD_VENDOR)
