#!/usr/bin/env bash
# Two builds of meshpipe side by side, measured in one script, interleaved (old, new, old, new,
# ...) so that both see the same machine load: the single-device training step
# (bench_step_time), gpt-tiny on 4 virtual devices through actors, threads and processes, the
# planning time of Alpa suite points (bench_planning --no-baselines), and lowering plus
# simulating a 64-device GPT-2.6B plan and a 16-device Wide-ResNet-4B plan. Writes a Markdown
# table of medians and new/old ratios.
# Usage: bench/versions.sh OLD_BIN_DIR NEW_BIN_DIR [OUT.md] [ROUNDS]
set -uo pipefail
old=${1:?usage: versions.sh OLD_BIN_DIR NEW_BIN_DIR}
new=${2:?usage: versions.sh OLD_BIN_DIR NEW_BIN_DIR}
out=${3:-bench/results/versions.md}
rounds=${4:-3}
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 UCX_NET_DEVICES=lo

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Median step time in ms of steps 6.. of `meshpipe train` output on stdin.
step_ms() {
  awk '/^step / { v = $6; u = $7;
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "ns") v /= 1e6;
      split($2, s, "/"); if (s[1] > 5) print v }' | median
}

# One measurement of case $1 with the binaries in $2; prints a number.
measure() {
  local name=$1 bin=$2
  case $name in
    step_gpt512)
      "$bin/bench_step_time" --warmup 1 --steps 5 --profile-steps 0 2> /dev/null |
        sed -nE 's/.*"median_s": *([0-9.eE+-]+).*/\1/p' | awk '{ print $1 * 1000 }' ;;
    tiny_actors) "$bin/meshpipe" train --model gpt-tiny --steps 40 --cluster cpu:1x4 \
        --micro-batches 2 | step_ms ;;
    tiny_threads) "$bin/meshpipe" train --model gpt-tiny --steps 40 --cluster cpu:1x4 \
        --micro-batches 2 --runner threads | step_ms ;;
    tiny_gloo_ucx) "$bin/meshpipe" train --model gpt-tiny --steps 40 --cluster cpu:1x4 \
        --micro-batches 2 --collectives gloo --transport ucx | step_ms ;;
    tiny_1x2_actors) "$bin/meshpipe" train --model gpt-tiny --steps 40 --cluster cpu:1x2 \
        --micro-batches 2 | step_ms ;;
    moe_2x2_actors) "$bin/meshpipe" train --model moe-tiny --steps 40 --cluster cpu:2x2 \
        --micro-batches 2 | step_ms ;;
    wres_dp_actors) "$bin/meshpipe" train --model wresnet-tiny --steps 20 --batch 64 \
        --cluster cpu:1x2 --micro-batches 1 | step_ms ;;
    tiny_2x2) MESHPIPE_BIN="$bin" "$src/scripts/launch-local.sh" 2 2 -- --model gpt-tiny \
        --steps 40 --micro-batches 2 2> /dev/null | step_ms ;;
    tiny_4x1) MESHPIPE_BIN="$bin" "$src/scripts/launch-local.sh" 4 1 -- --model gpt-tiny \
        --steps 40 --micro-batches 2 2> /dev/null | step_ms ;;
    plan_gpt67|plan_gpt39|plan_moe10|plan_wres4b)
      local model=${name#plan_}
      model=${model/gpt67/gpt-6.7b}; model=${model/gpt39/gpt-39b}; model=${model/moe10/moe-10b}
      model=${model/wres4b/wresnet-4b}
      local t0 t1
      t0=$(date +%s.%N)
      "$bin/bench_planning" --only "$model" --no-baselines > /dev/null 2>&1
      t1=$(date +%s.%N)
      awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' ;;
    sim_gpt26|sim_wres4b)
      local plan=$tmp/${name}.json
      [ -f "$plan" ] || return 1
      "$bin/meshpipe" simulate "$plan" | sed -nE 's/^simulation took ([0-9.]+) s/\1/p' ;;
  esac
}

# The plans the simulation cases lower (made once, by the new build).
"$new/meshpipe" plan --model gpt-2.6b --cluster p3.16xlarge:8 --micro-batches 128 --quiet \
  -o "$tmp/sim_gpt26.json" > /dev/null
"$new/meshpipe" plan --model wresnet-4b --cluster p3.16xlarge:2 --micro-batches 32 --quiet \
  -o "$tmp/sim_wres4b.json" > /dev/null

cases="step_gpt512 tiny_actors tiny_threads tiny_gloo_ucx tiny_1x2_actors moe_2x2_actors wres_dp_actors tiny_2x2 tiny_4x1 plan_gpt67 plan_gpt39 plan_moe10 plan_wres4b sim_gpt26 sim_wres4b"
declare -A unit=([step_gpt512]=ms [tiny_actors]=ms [tiny_threads]=ms [tiny_gloo_ucx]=ms
  [tiny_1x2_actors]=ms [moe_2x2_actors]=ms [wres_dp_actors]=ms [tiny_2x2]=ms [tiny_4x1]=ms
  [plan_gpt67]=s [plan_gpt39]=s [plan_moe10]=s [plan_wres4b]=s [sim_gpt26]=s [sim_wres4b]=s)
declare -A what=(
  [step_gpt512]="training step, GPT hidden 512 x 4 layers, seq 256, batch 8, 1 CPU device (bench_step_time)"
  [tiny_actors]="gpt-tiny on cpu:1x4, 2 micro-batches, stage actors"
  [tiny_threads]="gpt-tiny on cpu:1x4, 2 micro-batches, threads"
  [tiny_gloo_ucx]="gpt-tiny on cpu:1x4, 2 micro-batches, stage actors, Gloo + UCX between threads"
  [tiny_1x2_actors]="gpt-tiny on cpu:1x2, 2 micro-batches, stage actors"
  [moe_2x2_actors]="moe-tiny on cpu:2x2, 2 micro-batches, stage actors"
  [wres_dp_actors]="wresnet-tiny data parallel on cpu:1x2, batch 64 (synchronised batch norm)"
  [tiny_2x2]="gpt-tiny, 2 processes x 2 devices (launch-local.sh)"
  [tiny_4x1]="gpt-tiny, 4 processes x 1 device (launch-local.sh)"
  [plan_gpt67]="plan GPT-6.7B on 16 V100s (bench_planning --only, no baselines)"
  [plan_gpt39]="plan GPT-39B on 64 V100s (bench_planning --only, no baselines)"
  [plan_moe10]="plan MoE-10B on 16 V100s (bench_planning --only, no baselines)"
  [plan_wres4b]="plan Wide-ResNet-4B on 16 V100s (bench_planning --only, no baselines)"
  [sim_gpt26]="lower + simulate GPT-2.6B on 64 V100s, 128 micro-batches (meshpipe simulate)"
  [sim_wres4b]="lower + simulate Wide-ResNet-4B on 16 V100s, 32 micro-batches")
for c in $cases; do
  for r in $(seq 1 "$rounds"); do
    echo "$c round $r" >&2
    measure "$c" "$old" >> "$tmp/$c.old"
    measure "$c" "$new" >> "$tmp/$c.new"
  done
done
{
  echo "# Two builds side by side"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "date $(date -u '+%Y-%m-%d %H:%M') UTC; load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Old: \`$old\`; new: \`$new\`. Each case ran $rounds times per build, old and new"
  echo "alternating; medians. Produced by \`bench/versions.sh\`."
  echo
  echo "| case | old | new | new / old |"
  echo "|---|---|---|---|"
  for c in $cases; do
    o=$(median < "$tmp/$c.old")
    n=$(median < "$tmp/$c.new")
    awk -v w="${what[$c]}" -v o="$o" -v n="$n" -v u="${unit[$c]}" \
      'BEGIN { printf "| %s | %.3g %s | %.3g %s | %.2f |\n", w, o, u, n, u, (o > 0 ? n / o : 0) }'
  done
} > "$out"
cat "$out"
