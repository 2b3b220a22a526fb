#!/usr/bin/env bash
# Memory of lowering a plan for a real run, against the micro-batch count: `meshpipe train` of one
# step of gpt-tiny on 4 CPU virtual devices (a pipeline the planner chooses, micro-batches of one
# sample) at 64, 256 and 1024 micro-batches, with this build (the job holds each device's program
# in compact form: templates instantiated per micro-batch as the step runs) and, as the reference
# in the same run, a previous build (REF_BIN=DIR: the job lowered every instruction of every
# micro-batch). Peak resident memory and wall time of the whole command (planning, lowering, one
# step), the instructions of the step, the loss (the same for both builds). Writes
# bench/results/lowering.md.
# Usage: REF_BIN=/path/to/old/build/bin bench/lowering.sh [build/bin] [bench/results/lowering.md]
set -uo pipefail
bin_dir=${1:-build/bin}
out=${2:-bench/results/lowering.md}
ref_dir=${REF_BIN:-}
work=$(mktemp -d /tmp/bench_lowering_XXXXXX)
trap 'rm -rf "$work"' EXIT

# Runs one step with binary $1 at $2 micro-batches; prints "seconds|MiB|instructions|loss".
measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$1/meshpipe" train --model gpt-tiny --cluster cpu:1x4 \
    --batch "$2" --micro-batches "$2" --steps 1 --runner threads > "$work/out" 2> "$work/err" ||
    { echo "failed: $(tail -1 "$work/err")|||"; return; }
  local secs kb ins loss
  read -r secs kb < "$work/time"
  ins=$(sed -nE 's/^lowered: [0-9]+ device programs, ([0-9]+) instructions.*/\1/p' "$work/out")
  loss=$(sed -nE 's/^step +1\/1 +loss ([0-9.]+).*/\1/p' "$work/out")
  echo "$secs|$((kb / 1024))|$ins|$loss"
}

rows=()
for m in 64 256 1024; do
  echo "$m micro-batches..." >&2
  IFS='|' read -r ns nm nins nloss <<< "$(measure "$bin_dir" "$m")"
  ref="not run (set REF_BIN)"
  ratio="-"
  if [ -n "$ref_dir" ]; then
    IFS='|' read -r rs rm rins rloss <<< "$(measure "$ref_dir" "$m")"
    ref="$rs s, $rm MiB, loss $rloss"
    ratio=$(awk -v a="$rm" -v b="$nm" 'BEGIN { printf "%.1f x", a / b }')
  fi
  rows+=("| $m | $nins | $ns s, $nm MiB, loss $nloss | $ref | $ratio |")
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# Lowering for a real run: memory against the micro-batch count"
  echo
  echo "Machine: $(nproc) cores ($(sed -nE 's/^model name\s*: (.*)/\1/p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 2^20 }' /proc/meminfo); date $(date -u '+%Y-%m-%d %H:%M UTC'); load before the run: $load (the machine is shared: times drift)."
  echo "Produced by \`bench/lowering.sh\` (reference: ${ref_dir:-none})."
  echo "\`meshpipe train --model gpt-tiny --cluster cpu:1x4 --batch M --micro-batches M --steps 1 --runner threads\`: peak resident memory and wall time of the whole command (planning, lowering, one step on 4 CPU virtual devices). This build's job holds each device's program in compact form (lower_compact: templates of the first tasks, the steady state and the last ones; runtime/compact_program.h) and its interpreters instantiate them per micro-batch; the reference build lowered every instruction of every micro-batch. The loss of the step is the same in both."
  echo
  echo "| micro-batches | instructions per step | this build | reference build | reference / this (memory) |"
  echo "|---:|---:|---|---|---:|"
  printf '%s\n' "${rows[@]}"
} > "$out"
echo "wrote $out" >&2
