#!/usr/bin/env bash
# `meshpipe profile` end to end: a quick profile of cpu:1x2 is written, and plan, compare,
# simulate and train price with it (--profile); an accelerator cluster and a corrupted profile
# are errors that say why. Usage: cli_profile_test.sh MESHPIPE SCRATCH_DIR
set -uo pipefail
bin="$1"; dir="$2"
rm -rf "$dir"; mkdir -p "$dir"
prof="$dir/profile.json"
plan="$dir/plan.json"
fail() { echo "FAIL: $*"; exit 1; }
# Exits non-zero without a crash (a signal gives 128 + n).
refused() { [ "$1" -ne 0 ] && [ "$1" -lt 128 ]; }

out=$("$bin" profile --cluster cpu:1x2 --quick -o "$prof" 2>&1) || { echo "$out"; fail "profile exited non-zero"; }
echo "$out"
for want in "gemm f32" "memory-bound f32" "all-reduce of 2" "transfer:" "runtime cost per kernel beyond it" "wrote $prof"; do
  echo "$out" | grep -q -- "$want" || fail "profile output lacks '$want'"
done
grep -q '"gemm"' "$prof" || fail "the profile file has no gemm table"

out=$("$bin" plan --model gpt-tiny --cluster cpu:1x2 --batch 8 --quiet --profile "$prof" -o "$plan" 2>&1) || {
  echo "$out"; fail "plan --profile exited non-zero"; }
echo "$out" | grep -q "cost model: measured profile" || fail "plan does not say it priced with the profile"
grep -q '"profile"' "$plan" || fail "the plan file does not keep its profile"
out=$("$bin" plan --model gpt-tiny --cluster cpu:1x2 --batch 8 --quiet 2>&1) || fail "plan exited non-zero"
echo "$out" | grep -q "cost model: analytic" || fail "plan without a profile does not say analytic"

out=$("$bin" compare --model gpt-tiny --cluster cpu:1x2 --batch 8 --quiet --profile "$prof" 2>&1) || {
  echo "$out"; fail "compare --profile exited non-zero"; }
echo "$out" | grep -q "data parallel" || fail "compare --profile lacks the baselines"

out=$("$bin" simulate "$plan" 2>&1) || { echo "$out"; fail "simulate exited non-zero"; }
echo "$out" | grep -q "simulated step time" || fail "simulate lacks its step time"
"$bin" plan --model gpt-tiny --cluster cpu:1x2 --batch 8 --quiet -o "$dir/analytic.json" > /dev/null 2>&1 ||
  fail "plan exited non-zero"
out=$("$bin" simulate "$dir/analytic.json" --profile "$prof" 2>&1) || { echo "$out"; fail "simulate --profile exited non-zero"; }
echo "$out" | grep -q "simulated with the profile" || fail "simulate --profile does not say so"

out=$("$bin" train --model gpt-tiny --cluster cpu:1x2 --batch 8 --steps 4 --profile "$prof" 2>&1) || {
  echo "$out"; fail "train --profile exited non-zero"; }
echo "$out" | grep -E "timing: predicted .* a step \(profiled cost model\), measured median" ||
  fail "train --profile does not print predicted beside measured"
out=$("$bin" train --model gpt-tiny --cluster cpu:1x2 --batch 8 --steps 3 2>&1) || fail "train exited non-zero"
echo "$out" | grep -q "(analytic cost model)" || fail "train without a profile does not say analytic"

# Errors: devices that do not run here, a corrupted profile, a missing one.
out=$("$bin" profile --cluster p3.16xlarge:1 -o "$dir/gpu.json" 2>&1); rc=$?
refused $rc || fail "profiling V100s on a CPU machine accepted ($rc)"
echo "$out" | grep -q "cpu" || fail "the refusal does not say what can be profiled: $out"
[ -e "$dir/gpu.json" ] && fail "a refused profile wrote a file"
# An output that cannot be written is refused before measuring (a directory, a link).
out=$("$bin" profile --cluster cpu:1x2 --quick -o "$dir" 2>&1); rc=$?
refused $rc || fail "a directory as output accepted ($rc)"
echo "$out" | grep -q "not a regular file" || fail "the refusal does not say why: $out"
echo "$out" | grep -q "gemm f32" && fail "measured before refusing the output"
ln -sf "$prof" "$dir/link.json"
out=$("$bin" profile --cluster cpu:1x2 --quick -o "$dir/link.json" 2>&1); rc=$?
refused $rc || fail "a symbolic link as output accepted ($rc)"
out=$("$bin" profile --cluster cpu:1x2 --quick -o "$dir/nosuch/p.json" 2>&1); rc=$?
refused $rc || fail "a missing directory accepted ($rc)"
echo "$out" | grep -q "does not exist" || fail "the refusal does not name the directory: $out"
sed 's/"op_overhead_seconds": [^,}]*/"op_overhead_seconds": -3/' "$prof" > "$dir/bad.json"
out=$("$bin" plan --model gpt-tiny --cluster cpu:1x2 --quiet --profile "$dir/bad.json" 2>&1); rc=$?
refused $rc || fail "a corrupted profile accepted ($rc)"
echo "$out" | grep -q "op_overhead_seconds" || fail "the error does not name the field: $out"
echo "$out" | grep -q "bad.json" || fail "the error does not name the file: $out"
out=$("$bin" train --model gpt-tiny --plan "$plan" --profile "$prof" --steps 1 2>&1); rc=$?
refused $rc || fail "--profile with --plan accepted ($rc)"
echo "PASS"
