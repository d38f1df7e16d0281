# edgeproxy: two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run fleet test lint typecheck bench clean screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,shared]'
	touch $(STAMP)

## Start an edge node on its embedded defaults in front of the bundled demo origin.
run: $(STAMP)
	$(BIN)/edgeproxy demo

## A fleet on one machine: redis-server, N=3 edge nodes and the takedown service (README).
fleet: $(STAMP)
	$(BIN)/edgeproxy demo --fleet $(or $(N),3)

## The whole test suite plus lint.
test: $(STAMP)
	$(BIN)/ruff check proxy tests benchmarks
	$(BIN)/mypy proxy/rfc proxy/blocklist
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check proxy tests benchmarks
	$(BIN)/ruff format --check proxy tests benchmarks

## Load tests; QUICK=1 for a short run.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick,) $(BENCH_ARGS)

## The takedown desk's screenshots under docs/ (needs /usr/bin/chromium).
screenshots: $(STAMP)
	$(BIN)/python -m proxy.takedown.desk.screenshots --out docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache benchmarks/results
