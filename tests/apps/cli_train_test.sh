#!/usr/bin/env bash
# `meshpipe train --model gpt-tiny --steps 50` prints one line per step and the loss falls from
# about ln(64) = 4.16 to below 2.6.
set -euo pipefail
out=$("$1" train --model gpt-tiny --steps 50)
echo "$out" | tail -5
steps=$(echo "$out" | grep -c '^step ')
[ "$steps" -eq 50 ] || { echo "expected 50 step lines, got $steps"; exit 1; }
first=$(echo "$out" | grep '^step ' | head -1 | awk '{print $4}')
last=$(echo "$out" | grep '^step ' | tail -1 | awk '{print $4}')
echo "first loss $first, last loss $last"
awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 4.0 && l < 2.6) }' || {
  echo "loss did not fall enough"; exit 1; }
echo "$out" | grep -q 'tokens/s' || { echo "no throughput column"; exit 1; }
# (Captured first: grep -q stops reading at the match, and the writer's SIGPIPE would fail the
# pipeline under pipefail.)
models=$("$1" models) || { echo "models exited non-zero"; exit 1; }
echo "$models" | grep -q '^gpt-39b ' || { echo "models does not list gpt-39b"; exit 1; }
# --breakdown: on one virtual device without a cluster, and on a cluster with the actor runner;
# the activities listed account for most of the step (every kernel and wait is timed).
for args in "" "--cluster cpu:1x2"; do
  out=$("$1" train --model gpt-tiny --steps 3 --breakdown $args)
  echo "$out" | grep -q '^breakdown: ' || { echo "$out"; echo "no breakdown ($args)"; exit 1; }
  echo "$out" | grep -q 'kernel dot' || { echo "$out"; echo "no dot kernels ($args)"; exit 1; }
  share=$(echo "$out" | awk '/accounted$/ {sub("%", "", $3); print $3}')
  echo "breakdown ($args): ${share}% of the step accounted"
  awk -v s="$share" 'BEGIN { exit !(s >= 50 && s <= 110) }' ||
    { echo "$out"; echo "the breakdown accounts for ${share}% of the step ($args)"; exit 1; }
done
