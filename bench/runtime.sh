#!/usr/bin/env bash
# Runtime benchmarks, written to bench/results/runtime.md:
#  1. step time of the tiny zoo models on virtual CPU devices (the lowered programs run by the
#     actor runtime and by plain threads) against the single-device executor, in this script;
#  2. lowering and simulating a 64-device plan (GPT-2.6B on 8 p3.16xlarge hosts): wall time and
#     memory of `meshpipe simulate`, and the simulated step time against the planner's.
# Usage: bench/runtime.sh [build/bin/meshpipe] [bench/results/runtime.md]
set -euo pipefail
bin=${1:-build/bin/meshpipe}
out=${2:-bench/results/runtime.md}
steps=30
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# step_ms: the median step time in ms of steps 6..N of a `meshpipe train` run.
source "$(dirname "$0")/lib.sh"

{
  echo "# Runtime: step time on virtual CPU devices, simulation at 64 devices"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "date $(date -u '+%Y-%m-%d %H:%M') UTC. Release build. Produced by \`bench/runtime.sh\`."
  echo
  echo "## Step time of the tiny models (median of steps 6-$steps)"
  echo
  echo "Virtual devices are threads of one process on this 2-core machine, so more devices do not"
  echo "run faster here: the ratio against one device measures the runtime's overhead (lowered"
  echo "programs, collectives, transfers, the actor messages) on models whose ops take microseconds."
  echo "Plans are the planner's own for the cluster (\`--micro-batches\` fixed)."
  echo
  echo "| model | single device (executor) | cpu:1x2 actors | ratio | cpu:2x2 actors | ratio | cpu:2x2 threads | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  for model in gpt-tiny moe-tiny wresnet-tiny; do
    one=$(step_ms --model "$model")
    a2=$(step_ms --model "$model" --cluster cpu:1x2 --micro-batches 1)
    a4=$(step_ms --model "$model" --cluster cpu:2x2 --micro-batches 2)
    t4=$(step_ms --model "$model" --cluster cpu:2x2 --micro-batches 2 --runner threads)
    awk -v m="$model" -v o="$one" -v a="$a2" -v b="$a4" -v t="$t4" 'BEGIN {
      printf "| %s | %.2f ms | %.2f ms | %.2f | %.2f ms | %.2f | %.2f ms | %.2f |\n",
             m, o, a, a / o, b, b / o, t, t / o }'
  done
  echo
  echo "## Simulating a 64-device plan"
  echo
  /usr/bin/time -v "$bin" plan --model gpt-2.6b --cluster p3.16xlarge:8 --micro-batches 64 \
    -o "$tmp/plan.json" --quiet > "$tmp/plan.txt" 2> "$tmp/plan.time"
  /usr/bin/time -v "$bin" simulate "$tmp/plan.json" > "$tmp/sim.txt" 2> "$tmp/sim.time"
  wall() { grep 'Elapsed (wall clock)' "$1" | awk '{print $NF}'; }
  rss() { grep 'Maximum resident' "$1" | awk '{printf "%.2f GiB", $NF / 1048576}'; }
  echo "GPT-2.6B, global batch 1024 as 64 micro-batches, on 8 p3.16xlarge hosts (64 V100s); the"
  echo "plan from \`meshpipe plan --micro-batches 64\`, then \`meshpipe simulate\`."
  echo
  echo "| quantity | value |"
  echo "|---|---|"
  echo "| plan | $(grep -c '^[0-9]' "$tmp/plan.txt") stages; $(grep 'planning time' "$tmp/plan.txt" | sed 's/planning time: //') |"
  echo "| planning wall time, peak memory | $(wall "$tmp/plan.time"), $(rss "$tmp/plan.time") |"
  echo "| lowered program | $(grep '^lowered' "$tmp/sim.txt" | sed 's/lowered: //') |"
  echo "| lowering + simulation wall time, peak memory | $(wall "$tmp/sim.time"), $(rss "$tmp/sim.time") |"
  echo "| simulated step time | $(grep '^simulated step time' "$tmp/sim.txt" | sed 's/simulated step time: //') |"
  echo "| bubble fraction | $(grep '^bubble' "$tmp/sim.txt" | sed 's/bubble fraction: //') |"
} > "$out"
cat "$out"
