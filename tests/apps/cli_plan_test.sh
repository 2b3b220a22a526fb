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
echo "all plan CLI checks passed"
