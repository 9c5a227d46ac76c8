#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the sources that the installed llama-cpp-python
# vendors (same version, same compiler flags as its CPU build), for bench/engine.py to
# compare against. The binary is cached in bench/.cache/llama-server-<version>/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
version=$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)')
out=$here/.cache/llama-server-$version
[[ -x $out/bin/llama-server ]] && { echo "$out/bin/llama-server"; exit 0; }
src=$here/.cache/src
mkdir -p "$src"
sdist=$src/llama_cpp_python-$version.tar.gz
[[ -f $sdist ]] || "$py" -m pip download -q "llama-cpp-python==$version" --no-binary :all: --no-deps -d "$src"
rm -rf "$src/llama_cpp_python-$version"
tar -xzf "$sdist" -C "$src"
vendored=$src/llama_cpp_python-$version/vendor/llama.cpp
cmake -S "$vendored" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF ${CMAKE_ARGS:-} >&2
cmake --build "$out/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$out/bin"
cp "$out/build/bin/llama-server" "$out/bin/"
echo "$out/bin/llama-server"
