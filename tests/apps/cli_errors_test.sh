#!/usr/bin/env bash
# Bad command lines give a message naming the problem and a non-zero exit, never a crash.
set -uo pipefail
bin="$1"
expect_fail() {  # expect_fail PATTERN ARGS...
  local pattern="$1"; shift
  local out rc
  out=$("$bin" "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL: '$*' exited $rc"; echo "$out"; exit 1; fi
  if ! echo "$out" | grep -q -- "$pattern"; then
    echo "FAIL: '$*' did not mention '$pattern':"; echo "$out"; exit 1
  fi
  echo "ok: $* -> $(echo "$out" | head -1)"
}
expect_fail "unknown model 'gpt-huge'" train --model gpt-huge --steps 1
expect_fail "steps" train --model gpt-tiny --steps 0
expect_fail "optimizer" train --model gpt-tiny --optimizer lamb
expect_fail "lr" train --model gpt-tiny --lr -1
expect_fail "batch" train --model wresnet-tiny --batch 0 --steps 1
expect_fail "family" models --family nosuch
# CUDA asked for where it cannot run: an error naming the flag, why and the way out, never a
# silent CPU run. Without a GPU (or a CUDA build) the reason is named; with one, one device trains
# on it and says so.
cuda="$("$bin" train --model gpt-tiny --steps 1 --device cuda 2>&1)"
rc=$?
if [ $rc -eq 0 ]; then
  grep -q "1 GPU: " <<< "$cuda" || { echo "FAIL: --device cuda did not name its GPU"; echo "$cuda"; exit 1; }
  grep -q "^done: loss" <<< "$cuda" || { echo "FAIL: --device cuda printed no result"; exit 1; }
  echo "ok: train --device cuda -> trained on $(grep -o '1 GPU: [^,]*' <<< "$cuda" | head -1)"
else
  if [ $rc -ge 128 ] || ! grep -q "no GPU to run on\|built without CUDA" <<< "$cuda" ||
    ! grep -q "use --device cpu" <<< "$cuda"; then
    echo "FAIL: --device cuda without a GPU exited $rc without naming why:"; echo "$cuda"; exit 1
  fi
  echo "ok: train --device cuda -> $(head -1 <<< "$cuda")"
fi
# A multi-device GPU run needs a GPU per device and NCCL: without them, an error naming what is
# missing (on a GPU machine with too few GPUs: how many the plan needs); --breakdown and
# --profile measure CPU devices; NCCL collectives need GPUs.
expect_fail "no GPU to run on\|built without CUDA\|without NCCL\|one per GPU" \
  train --model gpt-tiny --steps 1 --device cuda --cluster cpu:1x2
expect_fail "measure CPU devices\|built without CUDA" train --model gpt-tiny --steps 1 --device cuda --breakdown
expect_fail "collectives nccl runs on GPUs" train --model gpt-tiny --steps 1 --cluster cpu:1x2 \
  --collectives nccl
expect_fail "device" train --model gpt-tiny --steps 1 --device tpu
# auto: the GPU for one device when there is one, else the CPU; a multi-device run on the CPU.
auto="$("$bin" train --model gpt-tiny --steps 1 --device auto 2>&1)" ||
  { echo "FAIL: --device auto did not train"; echo "$auto"; exit 1; }
grep -q "^done: loss" <<< "$auto" || { echo "FAIL: --device auto printed no result"; exit 1; }
grep -q "1 CPU device\|1 GPU: " <<< "$auto" ||
  { echo "FAIL: --device auto did not name its device"; echo "$auto"; exit 1; }
if [ $rc -ne 0 ] && ! grep -q "1 CPU device" <<< "$auto"; then
  echo "FAIL: --device auto without a GPU did not train on the CPU"; echo "$auto"; exit 1
fi
auto2="$("$bin" train --model gpt-tiny --steps 1 --device auto --cluster cpu:1x2 2>&1)" ||
  { echo "FAIL: --device auto on 2 devices did not train"; echo "$auto2"; exit 1; }
grep -q "^done: loss" <<< "$auto2" || { echo "FAIL: --device auto on 2 devices printed no result"; exit 1; }
# Captured first: grep -q stops reading early, and a writer cut off by SIGPIPE fails pipefail.
help="$("$bin" --help)"
grep -q "train" <<< "$help" || { echo "FAIL: --help does not list train"; exit 1; }
train_help="$("$bin" train --help)"
grep -q -- "--steps" <<< "$train_help" || { echo "FAIL: train --help lacks --steps"; exit 1; }
echo "all CLI error checks passed"
