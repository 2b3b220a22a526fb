#!/usr/bin/env bash
# Cost of crossing processes: median step time of gpt-tiny on 4 virtual CPU devices as
# 1 process x 4 devices (threads, in-process collectives and transport; and the same with UCX
# and with Gloo between the threads), 2 processes x 2 devices and 4 processes x 1 device
# (scripts/launch-local.sh, nodes pinned to the cores: UCX collectives and transfers between
# processes, and 4 x 1 with Gloo collectives too), each with the planner's plan for 2
# micro-batches. Writes bench/results/cluster.md.
# Usage: bench/cluster.sh [build/bin] [bench/results/cluster.md]
set -uo pipefail
bin_dir=${1:-build/bin}
out=${2:-bench/results/cluster.md}
src=$(cd "$(dirname "$0")/.." && pwd)
steps=40
export MESHPIPE_BIN="$bin_dir" UCX_NET_DEVICES=lo
median() {
  awk '/^step / { v = $6; u = $7;
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000;
      split($2, s, "/"); if (s[1] > 5) print v }' | sort -g |
    awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
plan_of() {
  sed -nE 's/^[0-9]+ +[0-9]+-[0-9]+ +\([0-9]+, [0-9]+\) +([0-9-]+) +(\([0-9]+, [0-9]+\)).*/\2 on devices \1/p' |
    paste -sd ';' | sed 's/;/; /g'
}
args="--model gpt-tiny --steps $steps --micro-batches 2"
one=$("$bin_dir/meshpipe" train $args --cluster cpu:1x4)
oneuu=$("$bin_dir/meshpipe" train $args --cluster cpu:1x4 --collectives ucx --transport ucx)
onegu=$("$bin_dir/meshpipe" train $args --cluster cpu:1x4 --collectives gloo --transport ucx)
two=$("$src/scripts/launch-local.sh" 2 2 -- $args)
four=$("$src/scripts/launch-local.sh" 4 1 -- $args)
fourg=$("$src/scripts/launch-local.sh" 4 1 -- $args --collectives gloo)
single=$("$bin_dir/meshpipe" train --model gpt-tiny --steps $steps)
{
  echo "# Cluster: the cost of crossing processes"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "date $(date -u '+%Y-%m-%d %H:%M') UTC. Release build. Produced by \`bench/cluster.sh\`."
  echo
  echo "gpt-tiny, batch 8 as 2 micro-batches, 4 virtual CPU devices, median step time of steps"
  echo "6-$steps. All processes share this machine's 2 cores, so the figures show overhead"
  echo "(control messages, UCX or Gloo collectives, UCX transfers over loopback), not speed-up."
  echo
  echo "| layout | plan (logical mesh on devices) | step time | vs 1 process |"
  echo "|---|---|---|---|"
  base=$(echo "$one" | median)
  for row in "1 process x 4 devices (in-process)|$one" \
             "1 process x 4 devices (UCX collectives + UCX)|$oneuu" \
             "1 process x 4 devices (Gloo + UCX)|$onegu" \
             "2 processes x 2 devices (UCX)|$two" \
             "4 processes x 1 device (UCX)|$four" \
             "4 processes x 1 device (Gloo collectives)|$fourg"; do
    name=${row%%|*}
    text=${row#*|}
    t=$(echo "$text" | median)
    awk -v n="$name" -v p="$(echo "$text" | plan_of)" -v t="$t" -v b="$base" \
      'BEGIN { printf "| %s | %s | %.2f ms | %.2f |\n", n, p, t, t / b }'
  done
  awk -v t="$(echo "$single" | median)" -v b="$base" \
    'BEGIN { printf "| reference: 1 device, executor | - | %.2f ms | %.2f |\n", t, t / b }'
  echo
  echo "UCX bandwidth between two processes against \`ucx_perftest\`: \`bench/results/comm.md\`."
} > "$out"
cat "$out"
