#!/usr/bin/env bash
# Runs bench_gemm (kernels::dot vs cblas_sgemm) with the benchmark's thread settings and writes
# bench/results/gemm.md. Usage: bench/gemm.sh [path/to/bench_gemm] [threads]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-build/bin/bench_gemm}"
threads="${2:-2}"
[[ "$binary" = /* ]] || binary="$repo/$binary"
if [[ ! -x "$binary" ]]; then
  echo "gemm.sh: $binary is not an executable; build the bench_gemm target first" >&2
  exit 1
fi
mkdir -p "$repo/bench/results"
OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
  "$binary" --reps 7 --markdown "$repo/bench/results/gemm.md"
echo "wrote $repo/bench/results/gemm.md"
