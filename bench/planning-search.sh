#!/usr/bin/env bash
# Planning time as a new user meets it: `meshpipe plan` with the micro-batch size searched (no
# --micro-batches), for the issue-13 points: GPT-39B on 8 p3.16xlarge hosts (64 V100s) and the
# 128-layer GPT (hidden 4096) on 32 DGX-H100 hosts (256 GPUs). Each row: wall time of the command,
# the planner's own breakdown, the sizes tried, the plan chosen. With REF_BIN=DIR (a build of
# another version), the same commands run with DIR/meshpipe too and the ratio is printed.
# Writes bench/results/planning-search.md.
# Usage: bench/planning-search.sh [build/bin] [bench/results/planning-search.md] [--long]
#   --long: include the 128-layer GPT (about 10-15 minutes on 2 cores)
set -uo pipefail
bin_dir=${1:-build/bin}
out=${2:-bench/results/planning-search.md}
long=${3:-}
work=$(mktemp -d /tmp/bench_search_XXXXXX)
trap 'rm -rf "$work"' EXIT

cases=(
  "gpt-39b|p3.16xlarge:8|--model gpt-39b --cluster p3.16xlarge:8 --batch 1024"
)
if [ "$long" = "--long" ]; then
  cases+=("gpt-26b-deep (128 layers)|dgx-h100:32|--model gpt-26b-deep --cluster dgx-h100:32 --batch 1024")
fi

# Runs plan with binary $1 and arguments $2; prints "wall|breakdown|tried|skipped|choice|step|tflops|count".
measure() {
  /usr/bin/time -f "%e" -o "$work/time" "$1/meshpipe" plan $2 > "$work/out" 2> "$work/err" ||
    { echo "failed: $(tail -1 "$work/err")"; return; }
  local wall breakdown tried skipped choice step tflops count
  wall=$(cat "$work/time")
  breakdown=$(sed -nE 's/^planning time: (.*); memory counted.*/\1/p' "$work/out")
  count=$(sed -nE 's/.*memory counted on the lowered program in ([0-9.]+ s).*/\1/p' "$work/out")
  tried=$(grep -c "^micro-batch size .* micro-batches) \[" "$work/err")
  skipped=$(sed -nE 's/^micro-batch size ([0-9]+): nothing fits.*the ([0-9]+) larger.*/\2 (after size \1)/p' "$work/err")
  choice=$(sed -nE 's/^micro-batches: ([0-9]+ x [0-9]+).*/\1/p' "$work/out")
  step=$(sed -nE 's/^predicted step time: ([0-9.]+ s), ([0-9.]+) TFLOP.*/\1/p' "$work/out")
  tflops=$(sed -nE 's/^predicted step time: [0-9.]+ s, ([0-9.]+) TFLOP.*/\1/p' "$work/out")
  echo "$wall|$breakdown|$tried|${skipped:-0}|$choice|$step|$tflops|$count"
}

rows=()
for c in "${cases[@]}"; do
  IFS='|' read -r name cluster args <<< "$c"
  echo "$name on $cluster..." >&2
  now=$(measure "$bin_dir" "$args")
  ref="-"
  if [ -n "${REF_BIN:-}" ]; then
    echo "  reference $REF_BIN..." >&2
    ref=$(measure "$REF_BIN" "$args")
  fi
  rows+=("$name|$cluster|$args|$now|$ref")
done

{
  echo "# Planning with the micro-batch size searched"
  echo
  echo "Machine: $(lscpu | sed -nE 's/^Model name: +//p' | head -1), $(nproc) cores; date $(date -u '+%Y-%m-%d %H:%M UTC'); load before the run: $(cut -d' ' -f1-3 /proc/loadavg). Produced by \`bench/planning-search.sh$( [ -n "$long" ] && echo " ... --long")\`$( [ -n "${REF_BIN:-}" ] && echo " with REF_BIN=$REF_BIN (the reference build)")."
  echo
  echo "| model | cluster | command | wall s | planner's breakdown | sizes planned | sizes skipped | chosen (micro-batches x size) | predicted step | TFLOP/s per GPU | memory count | reference wall s | reference's plan (micro-batches x size, predicted step) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${rows[@]}"; do
    IFS='|' read -r name cluster args wall breakdown tried skipped choice step tflops count rwall _ _ _ rchoice rstep _ <<< "$r"
    local_ref="-"
    [ -n "${rchoice:-}" ] && local_ref="$rchoice, $rstep"
    echo "| $name | $cluster | \`meshpipe plan $args\` | $wall | $breakdown | $tried | $skipped | $choice | $step | $tflops | $count | $rwall | $local_ref |"
  done
} > "$out"
cat "$out"
