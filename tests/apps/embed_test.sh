#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, builds each example with find_package and runs
# it: examples/embed (the single-device executor) and examples/service (the training service
# with the program's own CAF actor system; two jobs at once, their events as messages).
# Usage: embed_test.sh BUILD_DIR SCRATCH_DIR EXAMPLE_DIR:EXECUTABLE...
set -euo pipefail
build="$1"; scratch="$2"; shift 2
# Only a folder this script made (it leaves a marker) is cleared: never a source tree.
if [ -e "$scratch" ] && [ ! -e "$scratch/.embed-test-scratch" ]; then
  echo "embed_test.sh: $scratch exists and is not this test's scratch folder; not removing it"
  exit 1
fi
rm -rf "$scratch" && mkdir -p "$scratch" && touch "$scratch/.embed-test-scratch"
cmake --install "$build" --prefix "$scratch/prefix" > /dev/null
for example in "$@"; do
  dir="${example%%:*}"; exe="${example##*:}"; out="$scratch/$exe"
  cmake -S "$dir" -B "$out" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$scratch/prefix" > "$out.configure.log" 2>&1 || {
    cat "$out.configure.log"; exit 1; }
  cmake --build "$out" -j2 > "$out.build.log" 2>&1 || { cat "$out.build.log"; exit 1; }
  echo "== $exe"
  timeout 300 "$out/$exe"
done
