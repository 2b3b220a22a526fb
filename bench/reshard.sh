#!/usr/bin/env bash
# Cross-process resharding bandwidth: runs ucx_perftest tag_bw (bench/perftest.sh) at the piece
# sizes bench_reshard moves, then bench_reshard, which writes bench/results/reshard.md with both.
# Usage: bench/reshard.sh [path/to/bench_reshard] [--quick]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-build/bin/bench_reshard}"
shift || true
[[ "$binary" = /* ]] || binary="$repo/$binary"
if [[ ! -x "$binary" ]]; then
  echo "reshard.sh: $binary is not an executable; build the bench_reshard target first" >&2
  exit 1
fi
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"  # loopback only (docs/toolchain.md §4)
perftest_file="$(mktemp /tmp/reshard_perftest_XXXXXX)"
trap 'rm -f "$perftest_file"' EXIT
mapfile -t sizes < <("$binary" --piece-sizes "$@")
"$repo/bench/perftest.sh" "${sizes[@]}" >"$perftest_file"
mkdir -p "$repo/bench/results"
timeout 300 "$binary" --perftest "$perftest_file" --markdown "$repo/bench/results/reshard.md" "$@"
echo "wrote $repo/bench/results/reshard.md"
