#!/usr/bin/env bash
# The committed reproduction of Alpa's evaluation by simulation (bench/results/scaling/): the
# gpt, moe and wresnet suites on p3.16xlarge hosts (1-64 GPUs) and on dgx-h100 hosts (up to 256),
# each with `meshpipe bench scaling --simulate`. Resumable: run it again to continue.
# Usage: bench/scaling.sh [BUILD_DIR] [SUITES...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(gpt moe wresnet)
for cluster in p3.16xlarge dgx-h100; do
  max=64
  [ "$cluster" = dgx-h100 ] && max=256
  for suite in "${suites[@]}"; do
    out="$root/bench/results/scaling/$suite-$cluster"
    start=$(date +%s)
    "$build/bin/meshpipe" bench scaling --suite "$suite" --cluster "$cluster" --simulate \
      --max-devices "$max" --out "$out" > /dev/null
    echo "$suite on $cluster: $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
