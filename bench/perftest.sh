#!/usr/bin/env bash
# Runs ucx_perftest tag_bw (Debian package ucx-utils) between a server and a client process on
# 127.0.0.1 for each size given, best of 3 runs, and prints `<bytes> <MB/s>` lines after a '#'
# note naming the UCX version: the --perftest input of bench_comm and bench_reshard. Prints only
# a note to stderr when ucx_perftest is not installed. Iterations move about 512 MiB per run
# (20 to 20000), with a tenth as warm-up.
# Usage: bench/perftest.sh SIZE...
set -uo pipefail
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"  # loopback only (docs/toolchain.md §4)
if ! command -v ucx_perftest >/dev/null 2>&1; then
  echo "perftest.sh: ucx_perftest not found (Debian package ucx-utils); its column is skipped" >&2
  exit 0
fi
echo "# $(ucx_info -v 2>/dev/null | head -1 | sed 's/^# *//'), -t tag_bw"
for size in "$@"; do
  iters=$(((512 << 20) / size))
  ((iters > 20000)) && iters=20000
  ((iters < 20)) && iters=20
  best=""
  for run in 1 2 3; do
    port=$((20000 + RANDOM % 20000))
    timeout 60 ucx_perftest -p "$port" >/dev/null 2>&1 &
    server=$!
    sleep 0.3
    line="$(timeout 60 ucx_perftest 127.0.0.1 -p "$port" -t tag_bw -s "$size" -n "$iters" \
      -w $((iters / 10 + 1)) -v 2>/dev/null | tail -1 || true)"
    wait "$server" || true
    # CSV: iterations,50.0_percentile_lat,avg_lat,overall_lat,avg_bw,overall_bw,avg_mr,overall_mr
    bw="$(echo "$line" | awk -F, 'NF >= 8 { print $6 }')"
    if [[ -n "$bw" ]] && { [[ -z "$best" ]] || awk -v a="$bw" -v b="$best" 'BEGIN { exit !(a > b) }'; }; then
      best="$bw"
    fi
  done
  if [[ -n "$best" ]]; then
    echo "$size $best"
  else
    echo "perftest.sh: ucx_perftest failed for $size bytes" >&2
  fi
done
