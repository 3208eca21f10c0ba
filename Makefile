# Herald: `make run` starts the platform on the embedded broker, `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench soak clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/herald demo

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks
	$(PY) -m benchmarks.rpc_bench
	$(PY) -m benchmarks.outbox_bench
	$(PY) -m benchmarks.hrweb_bench

soak: $(STAMP)
	$(PY) -m pytest -m soak --run-soak

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
