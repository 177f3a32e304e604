# Two set-up commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-eviction clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gossipcache node --port 7000 --resp-port 6379 --metrics-port 9100 --max-memory 256MiB --eviction sieve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gossipcache sim tests examples
	$(BIN)/ruff format --check gossipcache sim tests examples

bench-eviction: $(STAMP)
	$(BIN)/python -m gossipcache.eviction_bench --out docs/eviction-results.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
