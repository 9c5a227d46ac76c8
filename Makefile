# The two commands: `make run` (the appliance on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config/agent.yaml

.PHONY: run test lint venv clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# llama-cpp-python compiles llama.cpp here the first time (minutes); pip caches the wheel.
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	scripts/dev-run.sh $(CONFIG)

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

bench: $(STAMP)
	$(PY) bench/idle.py
