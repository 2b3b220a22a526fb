#!/usr/bin/env bash
# `meshpipe shard` end to end: a GPT stage on p3.16xlarge prints each layer's strategies, the ILP
# size, cost and memory; bad arguments give messages that name the problem.
set -uo pipefail
bin="$1"
out=$("$bin" shard --model gpt-1.3b --layers 0:4 --mesh 2x4 --cluster p3.16xlarge 2>&1) || {
  echo "$out"; echo "FAIL: shard exited non-zero"; exit 1; }
echo "$out" | head -3
for want in "ILP: " "optimal" "layer 0:" "layer 4:" "layer2/mlp/fc1" "cost per step" \
            "memory per device"; do
  echo "$out" | grep -q -- "$want" || { echo "FAIL: output lacks '$want'"; exit 1; }
done
# Data parallel over axis 0 and Megatron's split over axis 1 (Alpa's plan for GPT in a host).
echo "$out" | grep -q "layer2/mlp/w1 R,S1" || { echo "FAIL: w1 is not column-split"; exit 1; }
echo "$out" | grep -q "layer2/mlp/w2 S1,R" || { echo "FAIL: w2 is not row-split"; exit 1; }

expect_fail() {  # expect_fail PATTERN ARGS...
  local pattern="$1"; shift
  local o rc
  o=$("$bin" shard "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: 'shard $*' exited $rc"; echo "$o"; exit 1; fi
  echo "$o" | grep -q -- "$pattern" || { echo "FAIL: 'shard $*' did not say '$pattern':"; echo "$o"; exit 1; }
  echo "ok: shard $* -> $(echo "$o" | tail -1)"
}
expect_fail "whole hosts" --model gpt-tiny --mesh 3x3 --cluster p3.16xlarge:2
expect_fail "outside" --model gpt-tiny --layers 5:2 --mesh 1x2
expect_fail "p3.16xlarge" --model gpt-tiny --cluster nosuch
expect_fail "does not exist" --model gpt-tiny --cluster /nonexistent/cluster.json
expect_fail "must look like" --model gpt-tiny --mesh 4
expect_fail "memory" --model gpt-tiny --mesh 1x2 --cluster cpu:1x2 --memory-gib 0.000001
"$bin" shard --help | grep -q -- "--memory-gib" || { echo "FAIL: shard --help"; exit 1; }
echo "all shard CLI checks passed"
