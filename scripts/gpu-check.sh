#!/usr/bin/env bash
# The GPU check (issue 15), run on the lent GPU machine in one call:
#   run(command="bash scripts/gpu-check.sh", carry=[".gpu-debs"], timeout_s=540)
# after scripts/gpu-deps.sh fetched the Debian packages here. It unpacks them into a private
# prefix (never into /), builds meshpipe with CUDA for sm_90 (Gloo off: its CMake file names
# absolute /usr paths), runs the CUDA probe and the GPU-tagged tests, and times PyTorch's GPT
# layer and bf16 GEMM as the reference for the targets; everything it measures goes to
# $OUT/gpu-check.md (and logs to $OUT). Each step is bounded; a failed step is reported and the
# next one still runs.
# Not yet run on a GPU machine (none was lent to the sessions that wrote it).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check-out}
mkdir -p "$out"
report="$out/gpu-check.md"
log() { echo "$*" | tee -a "$report"; }
: > "$report"
log "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo '?')"
log ""
log "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
log "- nvcc: $(nvcc --version 2>&1 | tail -1); cmake: $(cmake --version | head -1); cores: $(nproc)"

prefix=/tmp/mp-deps
if [ -d .gpu-debs ]; then
  mkdir -p "$prefix"
  for f in .gpu-debs/*.deb; do dpkg -x "$f" "$prefix"; done
fi
arch=$(uname -m)-linux-gnu
export CMAKE_PREFIX_PATH="$prefix/usr"
export CPATH="$prefix/usr/include:$prefix/usr/include/$arch${CPATH:+:$CPATH}"
export LIBRARY_PATH="$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UCX_NET_DEVICES=lo

step() {  # step NAME SECONDS COMMAND...: runs it with a limit, logs its tail, notes the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  log ""
  log "## $name: exit $rc in $((SECONDS - t0)) s"
  log '```'
  tail -n 25 "$out/$name.log" | tee -a "$report"
  log '```'
  return $rc
}

step configure 120 cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMP_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DMP_ENABLE_GLOO=OFF \
  -DCMAKE_LIBRARY_PATH="$prefix/usr/lib/$arch/openblas-pthread" &&
  step build 300 cmake --build build-gpu -j "$(nproc)" &&
  {
    step probe 30 build-gpu/bin/meshpipe train --model gpt-tiny --steps 1 --device cuda
    step cpu-train 60 build-gpu/bin/meshpipe train --model gpt-tiny --steps 5 --device auto
    step gpu-tests 120 ctest --test-dir build-gpu -L gpu --output-on-failure
  }
step torch-reference 180 python3 bench/gpu_torch_layer.py --out "$out/gpu_torch.md"
log ""
log "Logs: $out/*.log"
