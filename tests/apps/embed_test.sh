#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, builds examples/embed with find_package and
# runs it. Usage: embed_test.sh BUILD_DIR EXAMPLE_DIR SCRATCH_DIR
set -euo pipefail
build="$1"; example="$2"; scratch="$3"
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" > /dev/null
cmake -S "$example" -B "$scratch/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" > "$scratch.configure.log" 2>&1 || {
  cat "$scratch.configure.log"; exit 1; }
cmake --build "$scratch/build" -j2 > "$scratch.build.log" 2>&1 || { cat "$scratch.build.log"; exit 1; }
"$scratch/build/embed_example"
