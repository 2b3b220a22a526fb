#!/usr/bin/env bash
# The GPU check (issue 15), run on the lent GPU machine in one call:
#   run(command="bash scripts/gpu-check.sh", carry=[".gpu-debs"], timeout_s=570)
# after scripts/gpu-deps.sh fetched our Debian packages into .gpu-debs/ here. Everything runs
# within GPU_CHECK_SECONDS (540) of the start: each step is bounded by `timeout` to the smaller of
# its own bound and what the budget leaves after the time reserved for the steps behind it; a
# failed step is reported and the next one still runs. Steps (bound in seconds):
#   probe      the machine: GPU, OS, compilers, where cuDNN, NCCL and cuBLASLt live (30)
#   deps       unpacks .gpu-debs into a private prefix with dpkg -x (never into /), points
#              ucx's CMake file (absolute /usr) at it, and links cuDNN / NCCL / cuBLASLt of
#              PyTorch's wheels (nvidia/*, only libX.so.N there) where the toolkit lacks them (60)
#   configure  CMake, Ninja, CUDA for sm_90 only, Gloo off (its CMake file names absolute /usr
#              paths), prefix first; a launcher drops -Werror (a newer host g++ warns more; the
#              CI build keeps it) and `-include cstdint` covers headers that newer libstdc++ no
#              longer pulls in (120)
#   build      meshpipe, backend_ops, bench_gpu_layer and the test programs with `gpu`-labelled
#              cases (comm, runtime, train today) (330), on all cores but 4, while
#              torch-reference runs on those 4: bench/gpu_torch_layer.py, PyTorch's bf16 GPT
#              layers (eager, torch.compile) and GEMM (180)
#   m125-cpu   gpt-125m, batch 1, 3 bf16 steps on the CPU (240), once PyTorch is done, on the
#              build's cores, while on the other 4 cores run: backend-ops (`backend_ops
#              --backend cuda`, every CUDA kernel against the CPU; its whole output goes to the
#              report, 120), gpt-tiny 5 steps on cuda and cpu in f32 and bf16 (60 each), and
#              as a pipeline of 2 stages sharing GPU 0 (--plan, --device cuda: 60),
#              gpt-125m on cuda (120), ctest -L gpu (150: NCCL, GPU executor and job cases,
#              backend_ops again)
#   losses     per step, cuda against cpu: f32 within 1e-4 relative, bf16 within 1e-2
#   bench      bench_gpu_layer alone on the machine: the GEMM peak, the 125M / 1.3B / 2.6B
#              layer steps, the 1.3B profile (180)
#   results    $OUT/gpu.md, bench/results/gpu.md's content: both tables, the ratio to PyTorch per
#              shape, the targets (MFU >= 40%, >= PyTorch eager), the correctness verdicts
# $OUT gets at most 8 files: gpu-check.md (this report, written as the steps end), gpu.md,
# bench_gpu_layer.md, gpu_torch.md, backend_ops.log, logs.tar.gz (every log, CMakeCache.txt).
# Knobs for checking the script without a GPU: GPU_CHECK_ONLY=configure stops after configure
# (GPU_CHECK_TARGETS then names targets to build), GPU_CHECK_SKIP_BUILD=1 runs the steps after the
# build on the binaries of an existing build, GPU_CHECK_WORK (/tmp/gpu-check: prefix and logs),
# GPU_CHECK_BUILD_DIR (build-gpu), GPU_CHECK_SECONDS.
# Not yet run on a GPU machine: the configure step was checked on the build machine against the
# unpacked prefix (docs/toolchain.md, "The GPU machine").
# shellcheck disable=SC1091,SC2016,SC2317  # literal backquotes and $; functions run through bash -c
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
budget=${GPU_CHECK_SECONDS:-540}
out=${OUT:-/tmp/gpu-check-out}
work=${GPU_CHECK_WORK:-/tmp/gpu-check}
bdir=${GPU_CHECK_BUILD_DIR:-build-gpu}
only=${GPU_CHECK_ONLY:-}
prefix=$work/deps
logs=$work/logs
mkdir -p "$out" "$logs"
rm -f "$logs"/*
report=$out/gpu-check.md
: > "$report"
arch=$(uname -m)-linux-gnu
orig_ld_path=${LD_LIBRARY_PATH:-}

say() { printf '%s\n' "$@" | tee -a "$report"; }
left() { echo $((budget - (SECONDS - T0))); }
have() { command -v "$1" > /dev/null 2>&1; }

# step NAME BOUND RESERVE CMD...: runs CMD (stdout and stderr to $logs/NAME.log) for at most
# BOUND seconds and at most what the budget leaves after RESERVE seconds; writes its section
# (status, time, the log's last TAIL lines) to $logs/NAME.md and, unless SECTION_LATER=1, to the
# report. Returns CMD's status (124/137: timed out; 125: not started, no time left).
step() {
  local name=$1 bound=$2 reserve=$3
  shift 3
  local limit=$(($(left) - reserve)) t0=$SECONDS rc status
  ((limit > bound)) && limit=$bound
  if ((limit < 5)); then
    rc=125
    status="NOT RUN ($(left) s of the budget left)"
    : > "$logs/$name.log"
  else
    timeout -k 10 "$limit" "$@" > "$logs/$name.log" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      77) status="skipped (exit 77)" ;;
      124 | 137) status="TIMED OUT after $limit s" ;;
      *) status="FAILED (exit $rc)" ;;
    esac
  fi
  local shown="$*"
  ((${#shown} > 400)) && shown="${shown:0:400} ..."
  {
    printf '\n## %s: %s in %d s\n\n' "$name" "$status" $((SECONDS - t0))
    printf '`%s`\n\n```\n' "$shown"
    tail -n "${TAIL:-25}" "$logs/$name.log"
    printf '```\n'
  } > "$logs/$name.md"
  printf '| %s | %s | %d |\n' "$name" "$status" $((SECONDS - t0)) >> "$logs/summary.txt"
  [ "${SECTION_LATER:-0}" = 1 ] || tee -a "$report" < "$logs/$name.md"
  return $rc
}

# ---- probe ----
say "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo '?')"
say ""
gpu_line=$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader 2>&1 | head -1)
site=$(timeout 30 python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
  2> /dev/null || true)
have nvcc || [ ! -x /usr/local/cuda/bin/nvcc ] || export PATH=/usr/local/cuda/bin:$PATH
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
probe() {
  echo "- GPU: $gpu_line"
  echo "- OS: $(. /etc/os-release 2> /dev/null && echo "$PRETTY_NAME"); $(ldd --version 2>&1 | head -1)"
  echo "- g++: $(g++ --version 2>&1 | head -1); c++: $(readlink -f "$(command -v c++)" 2>&1)"
  echo "- nvcc: $nvcc_bin ($(nvcc --version 2>&1 | tail -1)); toolkit root $cuda_root"
  echo "- cmake: $(cmake --version | head -1) at $(command -v cmake); ninja: $(ninja --version 2>&1) at $(command -v ninja)"
  echo "- python3: $(command -v python3) ($(python3 --version 2>&1)); site-packages $site"
  echo "- cores: $(nproc); memory: $(free -g | awk '/^Mem/ {print $2 " GiB, " $7 " GiB free"}')"
  echo "- taskset: $(command -v taskset); dpkg: $(command -v dpkg); awk: $(readlink -f "$(command -v awk)")"
  echo "- CUDA libraries found (toolkit, system, wheels):"
  for pat in cudnn.h 'libcudnn.so*' nccl.h 'libnccl.so*' cublasLt.h 'libcublasLt.so*'; do
    find "$cuda_root/" /usr/include /usr/lib/"$arch" ${site:+"$site/nvidia"} -maxdepth 4 \
      -name "$pat" 2> /dev/null | head -4 | sed 's/^/  - /'
  done
}
export gpu_line site nvcc_bin cuda_root arch prefix work
TAIL=40 step probe 30 0 bash -c "$(declare -f probe); probe"

# ---- deps ----
extra_cmake=()
cuda_flags=""
deps() {
  set -e
  rm -rf "$prefix"
  mkdir -p "$prefix" "$work/cuda-extra/lib"
  local n=0 f
  for f in .gpu-debs/*.deb; do
    if command -v dpkg > /dev/null; then
      dpkg -x "$f" "$prefix"
    else  # ar + tar where dpkg is missing (tar finds the compression itself)
      rm -rf "$work/ar" && mkdir -p "$work/ar"
      (cd "$work/ar" && ar x "$OLDPWD/$f" && tar -xf data.tar.* -C "$prefix")
    fi
    n=$((n + 1))
  done
  echo "unpacked $n packages into $prefix"
  # ucx-targets.cmake sets prefix "/usr": point it at ours.
  local ucx=$prefix/usr/lib/$arch/cmake/ucx/ucx-targets.cmake
  [ -f "$ucx" ] && sed -i "s|set(prefix \"/usr\")|set(prefix \"$prefix/usr\")|" "$ucx" &&
    grep -n 'set(prefix' "$ucx"
  echo "dangling links in the prefix (outside share/doc):"
  find "$prefix" -xtype l ! -path '*/share/doc/*' | sed 's/^/  /'
}
if [ -d .gpu-debs ]; then
  step deps 60 0 bash -c "$(declare -f deps); deps"
else
  say "" "## deps: no .gpu-debs here (run scripts/gpu-deps.sh on the build machine and carry it)"
fi
# A CUDA library the toolkit and the system lack, taken from PyTorch's wheels (site-packages/
# nvidia/*/{include,lib}, which hold libX.so.N only): a libX.so link in $work/cuda-extra/lib.
# Sets the CMake variable VAR to it and puts the header's directory on the include paths.
use_wheel_lib() {  # NAME HEADER VAR [INCLUDE_VAR]
  local name=$1 header=$2 var=$3 incvar=${4:-}
  local d
  for d in "$cuda_root/include" "$cuda_root/targets/x86_64-linux/include" /usr/include \
    "/usr/include/$arch"; do
    [ -f "$d/$header" ] || continue
    for l in "$cuda_root/lib64" "$cuda_root/lib" "$cuda_root/targets/x86_64-linux/lib" \
      "/usr/lib/$arch"; do
      [ -e "$l/lib$name.so" ] && return 0
    done
  done
  [ -n "$site" ] && [ -d "$site/nvidia" ] || return 0
  local h lib
  h=$(find "$site/nvidia" -maxdepth 4 -name "$header" 2> /dev/null | head -1)
  lib=$(find "$site/nvidia" -maxdepth 4 -name "lib$name.so.[0-9]*" 2> /dev/null | sort | head -1)
  [ -n "$h" ] && [ -n "$lib" ] || return 0
  ln -sf "$lib" "$work/cuda-extra/lib/lib$name.so"
  extra_cmake+=("-D$var=$work/cuda-extra/lib/lib$name.so")
  [ -n "$incvar" ] && extra_cmake+=("-D$incvar=$(dirname "$h")")
  local hdir libdir
  hdir=$(dirname "$h")
  libdir=$(dirname "$lib")
  export CPATH="$hdir${CPATH:+:$CPATH}"
  cuda_flags+=" -isystem $hdir"
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "- lib$name from the wheels: $lib ($h)"
}
mkdir -p "$work/cuda-extra/lib"
use_wheel_lib cudnn cudnn.h MP_CUDNN_LIBRARY
use_wheel_lib nccl nccl.h NCCL_LIBRARY NCCL_INCLUDE_DIR
use_wheel_lib cublasLt cublasLt.h CUDA_cublasLt_LIBRARY
# The prefix goes first for compilers, the linker and the loader of our programs (the PyTorch
# step runs with the original environment).
libdirs="$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openblas-pthread:$work/cuda-extra/lib"
export CPATH="$prefix/usr/include:$prefix/usr/include/$arch${CPATH:+:$CPATH}"
export LIBRARY_PATH="$libdirs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UCX_MODULE_DIR="$prefix/usr/lib/$arch/ucx" UCX_NET_DEVICES=lo

# ---- configure ----
cat > "$work/no-werror" << 'EOF'
#!/bin/sh
# Runs the compiler without -Werror (the GPU build only; CI keeps it).
for a do
  shift
  [ "$a" = -Werror ] || set -- "$@" "$a"
done
exec "$@"
EOF
chmod +x "$work/no-werror"
gen="Unix Makefiles"
keep_going=(-k)
if have ninja; then
  gen=Ninja
  keep_going=(-k 0)
fi
[ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ] || step configure 120 0 cmake -S . -B "$bdir" -G "$gen" \
  -DCMAKE_BUILD_TYPE=Release -DMP_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DMP_ENABLE_GLOO=OFF \
  -DCMAKE_PREFIX_PATH="$prefix/usr" -DCMAKE_LIBRARY_PATH="$prefix/usr/lib/$arch/openblas-pthread" \
  -DCMAKE_CXX_FLAGS="-include cstdint" -DCMAKE_CXX_COMPILER_LAUNCHER="$work/no-werror" \
  -DCMAKE_CUDA_FLAGS="${cuda_flags# }" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DPython3_EXECUTABLE="$(command -v python3 || echo python3)" "${extra_cmake[@]}"
configured=$?
cp "$bdir/CMakeCache.txt" "$logs/CMakeCache.txt" 2> /dev/null
if [ "$only" = configure ]; then
  if [ -n "${GPU_CHECK_TARGETS:-}" ] && [ $configured = 0 ]; then
    # shellcheck disable=SC2086
    step build 3000 0 cmake --build "$bdir" -j "$(nproc)" --target $GPU_CHECK_TARGETS
  fi
  exit $configured
fi

# ---- build, with the PyTorch reference beside it ----
ncpu=$(nproc)
main_cpus="" side_cpus=""
on_main=() on_side=()
if have taskset && ((ncpu >= 8)); then
  main_cpus="0-$((ncpu - 5))"
  side_cpus="$((ncpu - 4))-$((ncpu - 1))"
  on_main=(taskset -c "$main_cpus")
  on_side=(taskset -c "$side_cpus")
fi
jobs=$((ncpu > 8 ? ncpu - 4 : ncpu))
# The programs below, and every test program with `gpu`-labelled cases (ctest -L gpu): the
# modules whose CMakeLists.txt give that label.
targets="meshpipe backend_ops bench_gpu_layer $(grep -l 'LABELS[^)]*gpu' src/*/CMakeLists.txt |
  sed 's|src/\(.*\)/CMakeLists.txt|\1_tests|' | tr '\n' ' ')"
torch_pid=""
run_torch() {
  SECTION_LATER=$1 TAIL=15 step torch-reference 180 0 env -u CPATH -u LIBRARY_PATH \
    LD_LIBRARY_PATH="$orig_ld_path" PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=4 \
    "${on_side[@]}" python3 bench/gpu_torch_layer.py --out "$out/gpu_torch.md"
}
if [ -n "$side_cpus" ]; then
  say "" "Build on cpus $main_cpus (-j$jobs) while PyTorch runs on cpus $side_cpus."
  run_torch 1 &
  torch_pid=$!
fi
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  say "" "## build: skipped (GPU_CHECK_SKIP_BUILD=1: the binaries of $bdir as they are)"
elif [ $configured = 0 ]; then
  # shellcheck disable=SC2086
  step build 330 150 "${on_main[@]}" cmake --build "$bdir" -j "$jobs" --target $targets -- \
    "${keep_going[@]}"
fi
grep -E 'error:|FAILED:|CMake Error|undefined reference' "$logs/build.log" 2> /dev/null | head -40 \
  > "$logs/build-errors.log"
if [ -s "$logs/build-errors.log" ]; then
  { printf '\nFirst build errors:\n```\n'; cat "$logs/build-errors.log"; printf '```\n'; } | tee -a "$report"
fi
bin=$bdir/bin
have_bin() { [ -x "$1" ] || {
  say "" "## $2: NOT RUN ($1 was not built)"
  printf '| %s | not built |  |\n' "$2" >> "$logs/summary.txt"
  return 1
}; }

if [ -n "$torch_pid" ]; then
  wait "$torch_pid"
  cat "$logs/torch-reference.md" >> "$report"
else
  run_torch 0
fi
# The CPU half of the 125M comparison needs no GPU: it runs on the build's cores beside the GPU
# correctness steps (which time nothing).
cpu125_pid=""
if [ -x "$bin/meshpipe" ] && [ -n "$main_cpus" ]; then
  SECTION_LATER=1 step m125-cpu 240 200 env OMP_NUM_THREADS=$((ncpu - 4)) \
    OPENBLAS_NUM_THREADS=$((ncpu - 4)) "${on_main[@]}" "$bin/meshpipe" train --model gpt-125m \
    --batch 1 --steps 3 --precision bf16 --device cpu &
  cpu125_pid=$!
fi

# ---- correctness on the GPU (on the side cores while the CPU run goes on) ----
if have_bin "$bdir/tests/backend_ops" backend-ops; then
  TAIL=100000 step backend-ops 120 120 "${on_side[@]}" "$bdir/tests/backend_ops" --backend cuda
  cp "$logs/backend-ops.log" "$out/backend_ops.log"
fi

# compare_losses LABEL TEST.log REF.log TOL: the losses the runs printed per step ("step i/n
# loss x ..."), test against reference, as relative differences; PASS when both printed the
# same steps and each is within TOL.
compare_losses() {
  local label=$1 test=$2 ref=$3 tol=$4 body verdict
  body=$(awk -v tol="$tol" '
    FNR == 1 { file++ }
    $1 == "step" && $3 == "loss" { if (file == 1) { t[$2] = $4; order[++n] = $2 } else r[$2] = $4 }
    END {
      bad = 0; worst = 0; m = 0
      for (i = 1; i <= n; i++) {
        s = order[i]
        if (!(s in r)) { printf "| %s | %s | - | missing |\n", s, t[s]; bad++; continue }
        d = t[s] - r[s]; if (d < 0) d = -d
        a = r[s] < 0 ? -r[s] : r[s]; rel = d / (a > 1e-12 ? a : 1e-12)
        if (rel > worst) worst = rel
        if (rel > tol) bad++
        m++
        printf "| %s | %s | %s | %.2e |\n", s, t[s], r[s], rel
      }
      for (s in r) if (!(s in t)) bad++
      w = "-"
      if (m > 0) w = sprintf("%.2e", worst)
      printf "VERDICT %s %d %s\n", (bad == 0 && m > 0) ? "PASS" : "FAIL", m, w
    }' "$test" "$ref" 2> /dev/null)
  verdict=$(grep '^VERDICT' <<< "$body")
  read -r _ v steps worst <<< "${verdict:-VERDICT FAIL 0 -}"
  local line="$label: $v ($steps steps compared, worst relative difference ${worst}, tolerance $tol)"
  say "" "### losses, $line" "" "| step | cuda | cpu | relative difference |" "|---|---:|---:|---:|"
  grep -v '^VERDICT' <<< "$body" | tee -a "$report"
  echo "- $line" >> "$logs/verdicts.txt"
}

if have_bin "$bin/meshpipe" gpt-tiny; then
  for p in f32 bf16; do
    for d in cuda cpu; do
      step "tiny-$p-$d" 60 200 "${on_side[@]}" "$bin/meshpipe" train --model gpt-tiny --steps 5 \
        --precision "$p" --device "$d"
    done
  done
  compare_losses "gpt-tiny f32, 5 steps" "$logs/tiny-f32-cuda.log" "$logs/tiny-f32-cpu.log" 1e-4
  compare_losses "gpt-tiny bf16, 5 steps" "$logs/tiny-bf16-cuda.log" "$logs/tiny-bf16-cpu.log" 1e-2
  # The 2-way split of the GPU's work: a pipeline of two single-device stages, both on GPU 0
  # (the per-device interpreter on device memory, transfers staged through the host).
  if "$bin/meshpipe" plan --quiet --model gpt-tiny --cluster cpu:1x2 --micro-batches 2 \
    --grid dp=1,tp=1,pp=2 -o "$work/pp2.json" > "$logs/pp2-plan.log" 2>&1; then
    step tiny-pp2-cuda 60 200 "${on_side[@]}" "$bin/meshpipe" train --model gpt-tiny --steps 5 \
      --plan "$work/pp2.json" --device cuda
    compare_losses "gpt-tiny f32, pipeline of 2 stages on one GPU, 5 steps" \
      "$logs/tiny-pp2-cuda.log" "$logs/tiny-f32-cpu.log" 1e-4
  fi
  step m125-cuda 120 200 "${on_side[@]}" "$bin/meshpipe" train --model gpt-125m --batch 1 \
    --steps 3 --precision bf16 --device cuda
fi
if [ -f "$bdir/CTestTestfile.cmake" ]; then
  TAIL=40 step ctest-gpu 150 200 "${on_side[@]}" ctest --test-dir "$bdir" -L gpu \
    --output-on-failure
fi
if [ -n "$cpu125_pid" ]; then
  wait "$cpu125_pid"
  cat "$logs/m125-cpu.md" >> "$report"
elif [ -x "$bin/meshpipe" ]; then
  step m125-cpu 240 200 "$bin/meshpipe" train --model gpt-125m --batch 1 --steps 3 \
    --precision bf16 --device cpu
fi
if [ -x "$bin/meshpipe" ]; then
  compare_losses "gpt-125m bf16, batch 1, 3 steps" "$logs/m125-cuda.log" "$logs/m125-cpu.log" 1e-2
fi

# ---- the layer benchmark, alone on the machine ----
if have_bin "$bin/bench_gpu_layer" bench; then
  TAIL=60 step bench 180 15 "$bin/bench_gpu_layer" --out "$out/bench_gpu_layer.md"
fi

# ---- results: bench/results/gpu.md's content ----
results() {
  local ours=$out/bench_gpu_layer.md torch=$out/gpu_torch.md
  echo "# GPU results (issue 15)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo '?'),"
  if [ -n "$side_cpus" ]; then
    echo "$gpu_line; written by scripts/gpu-check.sh (the PyTorch reference ran during the build,"
    echo "pinned to 4 cores the build did not use; bench_gpu_layer ran alone)."
  else
    echo "$gpu_line; written by scripts/gpu-check.sh (each benchmark alone on the machine)."
  fi
  echo
  echo "## Side by side: one GPT layer, bf16, meshpipe against PyTorch"
  echo
  echo "meshpipe: forward + backward + Adam on f32 master weights (bench_gpu_layer); PyTorch:"
  echo "forward + backward with bf16 weights, no optimizer (bench/gpu_torch_layer.py). Both count"
  echo "model FLOPs as 3 (24 b s h^2 + 4 b s^2 h) per layer. Ratio > 1: meshpipe is faster."
  echo
  echo "| layer | shape | meshpipe ms | TFLOP/s | MFU | PyTorch eager ms | TFLOP/s | torch.compile ms | TFLOP/s | meshpipe / eager | meshpipe / compile |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'|' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    function num(s) { return s ~ /^[0-9.]+$/ }
    function ratio(k, m) {
      if (!num(om[k]) || !num(tm[k, m]) || om[k] + 0 <= 0) return "-"
      if (shape[k] == tshape[k, m]) return sprintf("%.2f", tm[k, m] / om[k])
      return (num(ot[k]) && num(tt[k, m]) && tt[k, m] > 0) ? sprintf("%.2f", ot[k] / tt[k, m]) : "-"
    }
    FNR == 1 { file++ }
    file == 1 && $2 ~ /^ gpt-.* layer $/ {
      k = trim($2); keys[++n] = k; shape[k] = trim($3); om[k] = trim($6); ot[k] = trim($8)
      mfu[k] = trim($9)
    }
    file == 2 && $2 ~ / layer (fwd\+bwd)?,? ?(eager|torch\.compile) $/ {
      label = trim($2); m = label ~ /compile/ ? "compile" : "eager"
      k = label; sub(/ fwd\+bwd.*| ?, .*$/, "", k)
      tshape[k, m] = trim($3); tm[k, m] = trim($4); tt[k, m] = trim($5)
      if (!(k in shape)) { keys[++n] = k; shape[k] = tshape[k, m] }
    }
    END {
      for (i = 1; i <= n; i++) {
        k = keys[i]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k, shape[k],
          (k in om) ? om[k] : "-", (k in ot) ? ot[k] : "-", (k in mfu) ? mfu[k] : "-",
          ((k, "eager") in tm) ? tm[k, "eager"] : "-", ((k, "eager") in tt) ? tt[k, "eager"] : "-",
          ((k, "compile") in tm) ? tm[k, "compile"] : "-",
          ((k, "compile") in tt) ? tt[k, "compile"] : "-", ratio(k, "eager"), ratio(k, "compile")
      }
      if ("gpt-1.3b layer" in mfu) {
        m = mfu["gpt-1.3b layer"]; v = m; sub(/%/, "", v)
        printf "\nTargets (issue 15), the GPT-1.3B layer: MFU %s of the datasheet bf16 peak (target 40%%: %s); ", m,
          num(v) ? (v + 0 >= 40 ? "met" : "NOT met") : "unknown"
        r = ratio("gpt-1.3b layer", "eager")
        printf "%s x PyTorch eager (target >= 1: %s).\n", r, r == "-" ? "unknown" : (r + 0 >= 1 ? "met" : "NOT met")
      }
    }' "$ours" "$torch" 2> /dev/null
  echo
  echo "## Correctness on this GPU"
  echo
  grep -h '^backend_ops cuda' "$logs/backend-ops.log" 2> /dev/null | sed 's/^/- /'
  cat "$logs/verdicts.txt" 2> /dev/null
  grep -h -E '^(Total Test time|[0-9]+% tests passed)' "$logs/ctest-gpu.log" 2> /dev/null | sed 's/^/- ctest -L gpu: /'
  echo
  echo "## meshpipe (bench_gpu_layer)"
  echo
  sed 's/^# /### /; s/^## /### /' "$ours" 2> /dev/null || echo "(no output)"
  echo
  echo "## PyTorch (bench/gpu_torch_layer.py)"
  echo
  cat "$torch" 2> /dev/null || echo "(no output)"
}
results > "$out/gpu.md" 2>&1
say "" "## Summary ($((SECONDS - T0)) s of $budget)" "" "| step | status | s |" "|---|---|---:|"
tee -a "$report" < "$logs/summary.txt"
say "" "Results for bench/results/gpu.md: \$OUT/gpu.md. Logs: \$OUT/logs.tar.gz."
tar -czf "$out/logs.tar.gz" -C "$work" logs 2> /dev/null
exit 0
