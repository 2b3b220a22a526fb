#!/usr/bin/env bash
# `meshpipe plan`, `explain` and `compare` end to end on small cases; a corrupted plan file is
# rejected with the field named. Usage: cli_plan_test.sh MESHPIPE SCRATCH_DIR
set -uo pipefail
bin="$1"; dir="$2"
rm -rf "$dir"; mkdir -p "$dir"
plan="$dir/plan.json"

out=$("$bin" plan --model gpt-tiny --cluster cpu:2x2 --batch 16 --quiet -o "$plan" 2>&1) || {
  echo "$out"; echo "FAIL: plan exited non-zero"; exit 1; }
echo "$out"
for want in "stage  layers" "predicted step time" "TFLOP/s" "planning time" "wrote $plan"; do
  echo "$out" | grep -q -- "$want" || { echo "FAIL: plan output lacks '$want'"; exit 1; }
done
[ -s "$plan" ] || { echo "FAIL: no plan file"; exit 1; }

out=$("$bin" explain "$plan" 2>&1) || { echo "$out"; echo "FAIL: explain exited non-zero"; exit 1; }
echo "$out" | head -20
echo "$out" | grep -q "stage 0: layers" || { echo "FAIL: explain lacks the stage description"; exit 1; }
echo "$out" | grep -Eq "attn/wq .*(replicated|split over mesh axis)" || {
  echo "FAIL: explain does not describe the weights in words"; exit 1; }

out=$("$bin" compare --model gpt-tiny --cluster cpu:2x2 --batch 16 --quiet 2>&1) || {
  echo "$out"; echo "FAIL: compare exited non-zero"; exit 1; }
echo "$out"
for want in "meshpipe" "data parallel" "ZeRO-2" "ZeRO-3" "Megatron grid" "equal layers" \
            "equal operators" "intra-op only" "inter-op only"; do
  echo "$out" | grep -q -- "$want" || { echo "FAIL: compare lacks '$want'"; exit 1; }
done

# A corrupted plan: the error names the field.
sed 's/"micro_batches": [0-9]*/"micro_batches": "many"/' "$plan" > "$dir/bad.json"
out=$("$bin" explain "$dir/bad.json" 2>&1); rc=$?
if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: corrupted plan accepted ($rc)"; exit 1; fi
echo "$out" | grep -q "micro_batches" || { echo "FAIL: error does not name the field: $out"; exit 1; }
out=$("$bin" explain "$dir/missing.json" 2>&1); rc=$?
if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: missing plan accepted"; exit 1; fi
out=$("$bin" plan --model gpt-tiny --cluster nosuch 2>&1); rc=$?
if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: bad cluster accepted"; exit 1; fi
echo "$out" | grep -q "p3.16xlarge" || { echo "FAIL: bad cluster error does not list presets"; exit 1; }
out=$("$bin" plan --model gpt-tiny --batch 10 --micro-batches 4 2>&1); rc=$?
if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: indivisible batch accepted"; exit 1; fi

# Manual plans: a Megatron-style grid and explicit stages on 2 hosts x 2 devices, 2 layers.
common=(--model gpt-tiny --cluster cpu:2x2 --batch 16 --micro-batches 2 --layers 2 --quiet)
grid="$dir/grid.json"
out=$("$bin" plan "${common[@]}" --grid dp=1,tp=2,pp=2 -o "$grid" 2>&1) || {
  echo "$out"; echo "FAIL: plan --grid exited non-zero"; exit 1; }
echo "$out"
for want in "manual plan: grid dp=1,tp=2,pp=2" "predicted step time" "wrote $grid"; do
  echo "$out" | grep -q -- "$want" || { echo "FAIL: plan --grid output lacks '$want'"; exit 1; }
done
# pp = 2 stages of one layer, each on one host's 2 devices as logical mesh (1, 2).
echo "$out" | grep -Eq '^0 +0-0 +\(1, 2\) +0-1 +\(1, 2\) ' || { echo "FAIL: grid stage 0"; exit 1; }
echo "$out" | grep -Eq '^1 +1-1 +\(1, 2\) +2-3 +\(1, 2\) ' || { echo "FAIL: grid stage 1"; exit 1; }
grid_time=$(echo "$out" | sed -n 's/^predicted step time: \([^,]*\),.*/\1/p')
[ -n "$grid_time" ] || { echo "FAIL: no grid step time"; exit 1; }

stages="$dir/stages.json"
out=$("$bin" plan "${common[@]}" --stages "0-0@1x2:2x1;1-1@1x2:1x2" -o "$stages" 2>&1) || {
  echo "$out"; echo "FAIL: plan --stages exited non-zero"; exit 1; }
echo "$out"
echo "$out" | grep -q "manual plan: stages 0-0@1x2:2x1;1-1@1x2:1x2" || {
  echo "FAIL: plan --stages does not name the stages"; exit 1; }
echo "$out" | grep -Eq '^0 +0-0 +\(1, 2\) +0-1 +\(2, 1\) ' || { echo "FAIL: stages stage 0"; exit 1; }
echo "$out" | grep -Eq '^1 +1-1 +\(1, 2\) +2-3 +\(1, 2\) ' || { echo "FAIL: stages stage 1"; exit 1; }
# The grid written as stages is the same plan: the same prediction.
out=$("$bin" plan "${common[@]}" --stages "0@1x2:1x2;1@1x2:1x2" 2>&1) || {
  echo "$out"; echo "FAIL: plan --stages (the grid) exited non-zero"; exit 1; }
echo "$out" | grep -q "^predicted step time: $grid_time," || {
  echo "$out"; echo "FAIL: the grid as stages is not predicted at $grid_time"; exit 1; }

out=$("$bin" explain "$stages" 2>&1) || { echo "$out"; echo "FAIL: explain (stages) failed"; exit 1; }
echo "$out" | grep -q "stage 1: layers 1-1 on devices 2-3 as logical mesh (1, 2)" || {
  echo "$out"; echo "FAIL: explain does not describe the manual stages"; exit 1; }
for p in "$grid" "$stages"; do
  out=$("$bin" simulate "$p" 2>&1) || { echo "$out"; echo "FAIL: simulate $p failed"; exit 1; }
  echo "$out" | grep -q "simulated step time" || { echo "$out"; echo "FAIL: simulate $p"; exit 1; }
done
out=$("$bin" train --model gpt-tiny --plan "$stages" --steps 2 2>&1) || {
  echo "$out"; echo "FAIL: train --plan (stages) failed"; exit 1; }
echo "$out" | grep -q "^step    2/2" || { echo "$out"; echo "FAIL: train --plan did not step"; exit 1; }

out=$("$bin" compare "${common[@]}" --grid dp=2,tp=2,pp=1 2>&1) || {
  echo "$out"; echo "FAIL: compare --grid exited non-zero"; exit 1; }
echo "$out" | grep -Eq '^--grid .*grid dp=2,tp=2,pp=1, 2 micro-batches of 8' || {
  echo "$out"; echo "FAIL: compare lacks the --grid row"; exit 1; }

# Impossible manual plans exit 2 with the stage and the reason named; nothing is written.
expect_error() {  # exit code, text the error must contain, plan arguments...
  local code="$1" want="$2"
  shift 2
  local out rc
  out=$("$bin" plan "${common[@]}" -o "$dir/bad_manual.json" "$@" 2>&1); rc=$?
  if [ $rc -ne "$code" ]; then echo "$out"; echo "FAIL: '$*' exited $rc, not $code"; exit 1; fi
  echo "$out" | grep -qF -- "$want" || { echo "$out"; echo "FAIL: '$*' does not say '$want'"; exit 1; }
  [ ! -e "$dir/bad_manual.json" ] || { echo "FAIL: '$*' wrote a plan"; exit 1; }
}
expect_error 2 "stage 1: logical mesh (2, 2) has 4 devices, submesh (1, 2) has 2" \
  --stages "0-0@1x2:2x1;1-1@1x2:2x2"
expect_error 2 "stage 1: starts at layer 0, expected 1" --stages "0-0@1x2;0-1@1x2"
expect_error 2 "stage 0: the last stage ends at layer 0, but there are 2 clustered layers" \
  --stages "0-0@2x2"
expect_error 2 "stage 1: stages 0-1 need 6 devices, cluster cpu:2x2 has 4" \
  --stages "0-0@2x2;1-1@1x2"
expect_error 2 "stage 0: cluster cpu:2x2 has no submesh (1, 4) (its submeshes: (1, 1), (1, 2), (2, 2))" \
  --stages "0-1@1x4"
expect_error 2 "stage 1 ('1@1x2,remat'): unknown option 'remat'" \
  --stages "0@1x2;1@1x2,remat"
expect_error 2 "no submesh of 3 devices" --grid dp=3
expect_error 2 "grid 'dp=2,xp=2': unknown key 'xp'" --grid dp=2,xp=2
# A plan beyond device memory is printed, then refused with the stage named (exit 1).
cat > "$dir/small.json" <<'JSON'
{"name": "small", "hosts": 2, "devices_per_host": 2,
 "device": {"kind": "cpu", "memory_gib": 0.0004, "peak_tflops_f32": 0.1, "peak_tflops_f16": 0.1,
            "memory_bandwidth_gb_s": 10},
 "intra_host": {"bandwidth_gb_s": 10, "latency_us": 5},
 "inter_host": {"bandwidth_gb_s": 1, "latency_us": 20}}
JSON
out=$("$bin" plan --model gpt-tiny --cluster "$dir/small.json" --batch 16 --micro-batches 2 \
      --layers 2 --quiet --stages "0-0@1x2:2x1;1-1@1x2:1x2" -o "$dir/bad_manual.json" 2>&1); rc=$?
[ $rc -eq 1 ] || { echo "$out"; echo "FAIL: a plan beyond memory exited $rc, not 1"; exit 1; }
echo "$out" | grep -q "predicted step time" || { echo "FAIL: the plan beyond memory is not shown"; exit 1; }
echo "$out" | grep -q "stage 0: needs .* with 2 micro-batches in flight (1f1b)" || {
  echo "$out"; echo "FAIL: the memory error does not name the stage"; exit 1; }
[ ! -e "$dir/bad_manual.json" ] || { echo "FAIL: a plan beyond memory was written"; exit 1; }
out=$("$bin" plan "${common[@]}" --grid dp=2 --stages "0-1@2x2" 2>&1); rc=$?
if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: --grid with --stages accepted"; exit 1; fi
echo "$out" | grep -q "excludes" || { echo "$out"; echo "FAIL: --grid/--stages conflict unexplained"; exit 1; }
# A mixed-precision plan (--precision bf16: the graph train --precision bf16 builds) trains with
# --plan in bf16 as the planned run does, simulates, and refuses an f32 job by name.
"$bin" plan --model gpt-tiny --cluster cpu:1x2 --precision bf16 --micro-batches 2 --quiet \
  -o "$dir/bf16.json" > /dev/null || { echo "FAIL: bf16 plan"; exit 1; }
grep -q '"dtype": *"bf16"' "$dir/bf16.json" || { echo "FAIL: the plan does not say bf16"; exit 1; }
with_plan=$("$bin" train --model gpt-tiny --plan "$dir/bf16.json" --steps 3 | grep '^step ' |
  awk '{print $4}')
planned=$("$bin" train --model gpt-tiny --cluster cpu:1x2 --micro-batches 2 --precision bf16 \
  --steps 3 | grep '^step ' | awk '{print $4}')
[ -n "$with_plan" ] && [ "$with_plan" = "$planned" ] ||
  { echo "FAIL: bf16 --plan losses '$with_plan' differ from the planned run's '$planned'"; exit 1; }
"$bin" simulate "$dir/bf16.json" | grep -q '^simulated step time' ||
  { echo "FAIL: simulate of a bf16 plan"; exit 1; }
out=$("$bin" train --model gpt-tiny --plan "$dir/bf16.json" --steps 1 --precision f32 2>&1) &&
  { echo "FAIL: an f32 job took a bf16 plan"; exit 1; }
echo "$out" | grep -q "a plan for bf16 training, the job trains in f32" ||
  { echo "$out"; echo "FAIL: the precision mismatch is not named"; exit 1; }
echo "all plan CLI checks passed"
