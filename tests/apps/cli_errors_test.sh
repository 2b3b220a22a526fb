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
# CUDA asked for where it cannot run (no GPU here; with a GPU, op kinds without a CUDA kernel):
# an error naming the flag and the way out, not a silent CPU run.
expect_fail "use --device cpu" train --model gpt-tiny --steps 1 --device cuda
expect_fail "device" train --model gpt-tiny --steps 1 --device tpu
auto="$("$bin" train --model gpt-tiny --steps 1 --device auto 2>&1)" ||
  { echo "FAIL: --device auto did not train"; echo "$auto"; exit 1; }
grep -q "^done: loss" <<< "$auto" || { echo "FAIL: --device auto printed no result"; exit 1; }
# Captured first: grep -q stops reading early, and a writer cut off by SIGPIPE fails pipefail.
help="$("$bin" --help)"
grep -q "train" <<< "$help" || { echo "FAIL: --help does not list train"; exit 1; }
train_help="$("$bin" train --help)"
grep -q -- "--steps" <<< "$train_help" || { echo "FAIL: train --help lacks --steps"; exit 1; }
echo "all CLI error checks passed"
