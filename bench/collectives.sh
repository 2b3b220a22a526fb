#!/usr/bin/env bash
# Collective latency between two processes, Gloo against UCX (bench/collectives.cc), written to
# bench/results/collectives.md.
#   bench/collectives.sh [path/to/bench_collectives] [--quick]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-build/bin/bench_collectives}"
shift || true
[[ "$binary" = /* ]] || binary="$repo/$binary"
if [[ ! -x "$binary" ]]; then
  echo "collectives.sh: $binary is not an executable; build the bench_collectives target first" >&2
  exit 1
fi
export UCX_NET_DEVICES="${UCX_NET_DEVICES:-lo}"
mkdir -p "$repo/bench/results"
timeout 600 "$binary" --markdown "$repo/bench/results/collectives.md" "$@"
echo "wrote $repo/bench/results/collectives.md"
