#!/usr/bin/env bash
# What global-norm gradient clipping costs a step, written to bench/results/clipping.md: the
# median step time with `--clip-grad-norm 1` against the same run without it, in this script
# (runs alternate, twice each; the lower median of each kind counts), on one device and on a
# plan over 2 x 2 virtual devices (stage actors), for gpt-tiny and gpt-cpu. Clipping adds one
# squared-norm pass over the gradients each device counts and one small gather/answer of every
# device's share (with loss scaling's overflow verdict in the same exchange).
# Usage: bench/clipping.sh [build/bin/meshpipe] [bench/results/clipping.md]
set -euo pipefail
bin=${1:-build/bin/meshpipe}
out=${2:-bench/results/clipping.md}
steps=30

# step_ms: the median step time in ms of steps 6..N of a `meshpipe train` run.
source "$(dirname "$0")/lib.sh"
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }

{
  echo "# Gradient clipping: what it costs a step"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "date $(date -u '+%Y-%m-%d %H:%M') UTC; load $(cut -d' ' -f1-3 /proc/loadavg). Release build."
  echo "Produced by \`bench/clipping.sh\`: median step time of steps 6-$steps, runs alternating"
  echo "without and with \`--clip-grad-norm 1\`, twice each, the lower median of each counted."
  echo
  echo "| model | where | without | with clipping | ratio |"
  echo "|---|---|---|---|---|"
  for model in gpt-tiny gpt-cpu; do
    for where in one "cpu:2x2"; do
      args=(--model "$model")
      [ "$where" = one ] || args+=(--cluster "$where" --micro-batches 2)
      a1=$(step_ms "${args[@]}"); b1=$(step_ms "${args[@]}" --clip-grad-norm 1)
      a2=$(step_ms "${args[@]}"); b2=$(step_ms "${args[@]}" --clip-grad-norm 1)
      a=$(min "$a1" "$a2"); b=$(min "$b1" "$b2")
      label=$([ "$where" = one ] && echo "one device" || echo "$where, stage actors")
      awk -v m="$model" -v w="$label" -v a="$a" -v b="$b" 'BEGIN {
        printf "| %s | %s | %.2f ms | %.2f ms | %.3f |\n", m, w, a, b, b / a }'
    done
  done
} > "$out"
cat "$out"
