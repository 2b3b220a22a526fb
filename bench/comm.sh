#!/usr/bin/env bash
# Runs ucx_perftest tag_bw (bench/perftest.sh, if installed: Debian package ucx-utils) for the
# sizes bench_comm measures, then bench_comm, which writes bench/results/comm.md with both.
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
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"  # loopback only (docs/toolchain.md §4)
perftest_file="$(mktemp /tmp/comm_perftest_XXXXXX)"
trap 'rm -f "$perftest_file"' EXIT

sizes=()
for shift_bits in 12 14 16 18 20 22 24 26; do sizes+=($((1 << shift_bits))); done
"$repo/bench/perftest.sh" "${sizes[@]}" >"$perftest_file"

mkdir -p "$repo/bench/results"
timeout 110 "$binary" --perftest "$perftest_file" --markdown "$repo/bench/results/comm.md" "$@"
echo "wrote $repo/bench/results/comm.md"
