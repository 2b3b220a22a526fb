#!/usr/bin/env bash
# Time and memory of `meshpipe simulate` on the paper's scale: plans for GPT-2.6B on one
# p3.16xlarge host (128 micro-batches) and GPT-39B on 8 hosts as Alpa ran it (tp 4 x pp 16 with
# recomputation, 64 and 1024 micro-batches), each simulated in the compact form (the default:
# templates per task, runtime/compact_program.h) and, as the reference in the same run, the flat
# form (`--flat`: every instruction lowered, as before the compact form) where it fits this
# machine's memory. Writes bench/results/simulate.md.
# Usage: bench/simulate.sh [build/bin] [bench/results/simulate.md]
set -uo pipefail
bin_dir=${1:-build/bin}
out=${2:-bench/results/simulate.md}
work=$(mktemp -d /tmp/bench_simulate_XXXXXX)
trap 'rm -rf "$work"' EXIT
mp="$bin_dir/meshpipe"

# name | plan arguments | run the flat reference too (yes/no)
cases=(
  "gpt-2.6b, p3.16xlarge:1, 128 micro-batches (planner's plan)|--model gpt-2.6b --cluster p3.16xlarge:1 --micro-batches 128|yes"
  "gpt-39b, p3.16xlarge:8, tp 4 x pp 16, recompute, 64 micro-batches|--model gpt-39b --cluster p3.16xlarge:8 --grid dp=1,tp=4,pp=16 --recompute on --batch 64 --micro-batches 64|yes"
  "gpt-39b, p3.16xlarge:8, tp 4 x pp 16, recompute, 1024 micro-batches (Alpa's run, --grid)|--model gpt-39b --cluster p3.16xlarge:8 --grid dp=1,tp=4,pp=16 --recompute on --batch 1024 --micro-batches 1024|no"
  "gpt-39b, p3.16xlarge:8, Alpa's 16 stages written with --stages, recompute, 1024 micro-batches|--model gpt-39b --cluster p3.16xlarge:8 --layers 16 --stages $(for k in $(seq 0 15); do printf '%d@1x4:1x4,recompute=on' "$k"; [ "$k" -lt 15 ] && printf ';'; done) --batch 1024 --micro-batches 1024|no"
  "gpt-39b, p3.16xlarge:8, the planner's plan, 1024 micro-batches|--model gpt-39b --cluster p3.16xlarge:8 --batch 1024 --micro-batches 1024|no"
)

# Runs `simulate` with $1 (extra flags) on plan $2; prints "seconds|MiB|step time|peaks|instructions".
measure() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$mp" simulate $1 "$2" > "$work/sim.out" 2> "$work/sim.err" ||
    { echo "failed: $(tail -1 "$work/sim.err")"; return; }
  local secs kb step peaks ins
  read -r secs kb < "$work/time"
  step=$(sed -nE 's/^simulated step time: ([^(]+) \(.*/\1/p' "$work/sim.out")
  peaks=$(awk '$1 ~ /^[0-9]+$/ && NF >= 9 { print $(NF-3), $(NF-2) }' "$work/sim.out" | sort -u | sort -k1 -g -r | head -1)
  ins=$(sed -nE 's/^lowered: ([0-9]+) instructions.*/\1/p' "$work/sim.out")
  echo "$secs|$((kb / 1024))|$step|$peaks|$ins"
}

rows=()
for c in "${cases[@]}"; do
  IFS='|' read -r name args flat <<< "$c"
  echo "$name: planning..." >&2
  "$mp" plan --quiet $args -o "$work/plan.json" > /dev/null 2> "$work/plan.err" ||
    { rows+=("| $name | planning failed: $(tail -1 "$work/plan.err") | | | | | |"); continue; }
  echo "$name: simulating (compact)..." >&2
  IFS='|' read -r cs cm cstep cpeak cins <<< "$(measure "" "$work/plan.json")"
  fs="not run"; fm="-"; same="-"
  if [ "$flat" = yes ]; then
    echo "$name: simulating (flat)..." >&2
    IFS='|' read -r fs fm fstep fpeak fins <<< "$(measure --flat "$work/plan.json")"
    if [ "$fstep" = "$cstep" ] && [ "$fpeak" = "$cpeak" ]; then same=yes; else same="no ($fstep, $fpeak)"; fi
    ratio=$(awk -v a="$fs" -v b="$cs" -v c="$fm" -v d="$cm" 'BEGIN { printf "%.1f x, %.1f x", a / b, c / d }')
  else
    fs="not run (~$(awk -v n="$cins" 'BEGIN { printf "%.0f", n * 530 / 2^30 }') GiB at the flat form's 530 B per instruction)"
    ratio="-"
  fi
  rows+=("| $name | $cins | $cs s, $cm MiB | $fs$( [ "$flat" = yes ] && echo " s, $fm MiB") | $ratio | $cstep | $same |")
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# Simulating the paper's plans: compact programs"
  echo
  echo "Machine: $(nproc) cores ($(sed -nE 's/^model name\s*: (.*)/\1/p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 2^20 }' /proc/meminfo); date $(date -u '+%Y-%m-%d %H:%M UTC'); load before the run: $load (the machine is shared: times drift)."
  echo "Produced by \`bench/simulate.sh\`. Wall time and peak resident memory of \`meshpipe simulate PLAN\` (lowering included), in the compact form (the default: each device's forward and backward tasks are templates instantiated per micro-batch, runtime/compact_program.h) and the flat form (\`--flat\`, every instruction of every micro-batch lowered: what simulate did before, kept as the reference). \"same\" = the two report the same step time and the same largest peak memory. The flat form is not run where it would not fit this machine."
  echo
  echo "| plan | instructions | compact | flat (reference) | flat / compact (time, memory) | simulated step | same |"
  echo "|---|---:|---|---|---|---:|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Targets (issue 13): GPT-39B's 64-GPU plan with 1024 micro-batches simulated in <= 60 s and <= 2 GiB; before the compact form, GPT-2.6B on 8 GPUs with 128 micro-batches took 78 s and 5.6 GB and GPT-39B with 1024 micro-batches ran out of memory on a 24 GiB machine."
} > "$out"
echo "wrote $out" >&2
