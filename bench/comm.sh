#!/usr/bin/env bash
# Runs ucx_perftest tag_bw (if installed: Debian package ucx-utils) for the sizes bench_comm
# measures, then bench_comm, which writes bench/results/comm.md with both.
# Usage: bench/comm.sh [path/to/bench_comm] [--quick]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-build/bin/bench_comm}"
shift || true
[[ "$binary" = /* ]] || binary="$repo/$binary"
if [[ ! -x "$binary" ]]; then
  echo "comm.sh: $binary is not an executable; build the bench_comm target first" >&2
  exit 1
fi
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"  # loopback only (TOOLCHAIN.md §4)
perftest_file="$(mktemp /tmp/comm_perftest_XXXXXX)"
trap 'rm -f "$perftest_file"' EXIT

# One server and one client process per run; the server exits after one test. Iterations move
# about 512 MiB per run (20 to 20000), with a tenth as warm-up; best of 3 runs per size.
if command -v ucx_perftest >/dev/null 2>&1; then
  echo "# $(ucx_info -v 2>/dev/null | head -1 | sed 's/^# *//'), -t tag_bw" >"$perftest_file"
  for shift_bits in 12 14 16 18 20 22 24 26; do
    size=$((1 << shift_bits))
    iters=$(((512 << 20) / size))
    ((iters > 20000)) && iters=20000
    ((iters < 20)) && iters=20
    best=""
    for run in 1 2 3; do  # best of 3 runs, like bench_comm's best batch
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
    bw="$best"
    if [[ -n "$bw" ]]; then
      echo "$size $bw" >>"$perftest_file"
    else
      echo "comm.sh: ucx_perftest failed for $size bytes" >&2
    fi
  done
else
  echo "comm.sh: ucx_perftest not found (Debian package ucx-utils); its column is skipped" >&2
fi

mkdir -p "$repo/bench/results"
timeout 110 "$binary" --perftest "$perftest_file" --markdown "$repo/bench/results/comm.md" "$@"
echo "wrote $repo/bench/results/comm.md"
