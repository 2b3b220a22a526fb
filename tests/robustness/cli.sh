#!/usr/bin/env bash
# Fault and abuse suite, surface: the command line of `meshpipe` (issue 11): careless or hostile
# options, files that are not what they claim, signals during training.
# Usage: cli.sh BIN_DIR [RESULTS_DIR]
source "$(dirname "$0")/lib.sh"
rb_init cli "$1" "${2:-}"

no_training_here() { ! grep -Eq '^step +[0-9]+/' "$1"; }

# --- data loss --------------------------------------------------------------------------------
rb_case "--save into a directory holding other files" fail "keep" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save keep
rb_case "--save onto a regular file" fail "notes.txt" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save notes.txt
rb_case "--save ''" fail "--save needs a directory" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save ""
rb_case "--save-every without --save" fail "requires --save" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 4 --save-every 2

rb_case "--save DIR/. (the partial directory would land inside it)" 2 \
  "name the checkpoint directory itself" --check no_training_here \
  -- "$MESHPIPE" train --model gpt-tiny --steps 2 --save keep/.

# --- numbers that are not numbers -------------------------------------------------------------
rb_case "--lr nan" fail "--lr: must be a finite number > 0" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --lr nan
rb_case "--lr inf" fail "--lr: must be a finite number > 0" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --lr inf
rb_case "--momentum nan" fail "--momentum: must be a finite number in \[0, 0.999\]" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --optimizer sgd --momentum nan
rb_case "--weight-decay -inf" fail "--weight-decay: must be a finite number >= 0" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --weight-decay=-inf
rb_case "--lr 1e-46 (0 as a float) is refused, not replaced by the default" 2 \
  "learning rate must be finite and > 0, got 0" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --lr 1e-46
rb_case "--cluster ''" fail "--cluster needs a preset or a file" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --cluster ""
rb_case "100,000 micro-batches" 2 "more than the 4096 a plan may have" --timeout 30 \
  -- "$MESHPIPE" train --model gpt-tiny --cluster cpu:1x2 --batch 100000 --micro-batches 100000
rb_case "plan --memory-fraction nan" fail "--memory-fraction: must be a finite number" \
  -- "$MESHPIPE" plan --model gpt-tiny --cluster cpu:1x2 --memory-fraction nan

# --- unbounded input --------------------------------------------------------------------------
rb_case "--batch 1000000000000" 2 "global batch of 1000000000000 is more than the 1048576" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --batch 1000000000000
rb_case "--batch 1e8 (not an integer)" fail "--batch: must be a whole number >= 1, got .1e8." \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --batch 1e8
rb_case "--batch 100000000" 2 "global batch of 100000000 is more than" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --batch 100000000
rb_case "a batch larger than this machine's memory" fail "more than the .* this machine has available" \
  --timeout 60 -- "$MESHPIPE" train --model gpt-1.3b --steps 1 --batch 100000
rb_case "plan --cluster dgx-h100:1000000" 2 "more than the 1024 meshpipe plans for" \
  --timeout 20 -- "$MESHPIPE" plan --model gpt-tiny --cluster dgx-h100:1000000
rb_case "train --cluster cpu:100000x1" 2 "more than the 1024" \
  --timeout 20 -- "$MESHPIPE" train --model gpt-tiny --steps 1 --cluster cpu:100000x1

# --- files that are not what they claim -------------------------------------------------------
rb_case "explain /dev/zero" 2 "'/dev/zero' is a character device, not a regular file" \
  --timeout 20 -- "$MESHPIPE" explain /dev/zero
make_fifo() { mkfifo fifo.json; }
rb_case "explain a FIFO (no writer)" 2 "is a FIFO, not a regular file" \
  --timeout 20 --setup make_fifo -- "$MESHPIPE" explain fifo.json
rb_case "explain a directory" 2 "is a directory, not a regular file" \
  --timeout 20 -- "$MESHPIPE" explain keep
make_huge() { truncate -s 100M huge.json; }
rb_case "explain a 100 MB file" fail "larger than the 64.00 MiB limit" \
  --timeout 20 --setup make_huge -- "$MESHPIPE" explain huge.json
make_deep() { /usr/bin/python3 -c "print('[' * 200000 + ']' * 200000)" > deep.json; }
rb_case "explain JSON nested 200,000 deep" 2 "nest deeper than 64 levels" \
  --timeout 20 --setup make_deep -- "$MESHPIPE" explain deep.json
rb_case "explain /proc/self/mem" fail "plan file '/proc/self/mem'" \
  --timeout 20 -- "$MESHPIPE" explain /proc/self/mem

# --- --check-numerics on every path -----------------------------------------------------------
no_checkpoint() { [ ! -e ck ] && ! ls -d ck.* > /dev/null 2>&1; }
rb_case "--check-numerics, one device" 1 "numerical error: .*non-finite value" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 20 --lr 1e6 --check-numerics
rb_case "--check-numerics, --cluster cpu:1x1" 1 "numerical error: .*non-finite value" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 20 --lr 1e6 --check-numerics --cluster cpu:1x1
rb_case "--check-numerics, --runner threads" 1 "numerical error: .*non-finite value" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 20 --lr 1e6 --check-numerics --cluster cpu:1x2 \
  --runner threads
rb_case "--check-numerics with --save: nothing saved" 1 "numerical error: .*non-finite value" \
  --check no_checkpoint -- "$MESHPIPE" train --model gpt-tiny --steps 20 --lr 1e6 \
  --check-numerics --save ck
rb_case "a diverging run without --check-numerics stops at the non-finite loss" 1 \
  "numerical error: step [0-9]+: the loss is" \
  --check no_checkpoint -- "$MESHPIPE" train --model gpt-tiny --steps 200 --lr 1e6 --save ck

# --- signals ----------------------------------------------------------------------------------
# Runs training in the background, sends a signal once the first steps are printed, waits.
signal_after_steps() {  # signal_after_steps SIGNAL ARGS...
  local sig="$1"; shift
  "$MESHPIPE" "$@" > train.out 2>&1 &
  local pid=$! n=0
  until grep -q "^step" train.out 2> /dev/null || [ $n -ge 600 ]; do sleep 0.1; n=$((n + 1)); done
  sleep 0.3
  kill "-$sig" "$pid"
  wait "$pid"
  local rc=$?
  cat train.out
  return $rc
}
saved_and_clean() {
  grep -q '"format": "meshpipe-checkpoint"' ck/manifest.json && ! ls -d ck.* > /dev/null 2>&1
}
rb_case "SIGINT during training with --save: saves, exits 130" 130 "interrupted after step" \
  --check saved_and_clean -- signal_after_steps INT train --model gpt-tiny --steps 1000000 --save ck
rb_case "SIGTERM during a cluster run with --save: saves, exits 143" 143 "interrupted after step" \
  --check saved_and_clean -- signal_after_steps TERM train --model gpt-tiny --steps 1000000 \
  --cluster cpu:1x2 --save ck
rb_case "SIGINT without --save: exits 130, says nothing was saved" 130 "nothing saved" \
  -- signal_after_steps INT train --model gpt-tiny --steps 1000000
rb_case "a crash (SIGSEGV) ends the process, never hangs" 139 "fatal signal SIGSEGV" \
  --timeout 60 -- signal_after_steps SEGV train --model gpt-tiny --steps 1000000
rb_case "a crash with UCX loaded (--transport ucx) ends the process" 139 "fatal signal SIGSEGV" \
  --timeout 60 -- signal_after_steps SEGV train --model gpt-tiny --steps 1000000 \
  --cluster cpu:1x2 --transport ucx

# --- what is printed --------------------------------------------------------------------------
no_escape() { ! grep -q $'\x1b' "$1"; }
rb_case "a model name with terminal escapes is printed escaped" 2 "unknown model" \
  --check no_escape -- "$MESHPIPE" train --model $'\x1b]0;pwned\x07\x1b[2J' --steps 1

rb_case "a plain run still trains" ok "done: loss" -- "$MESHPIPE" train --model gpt-tiny --steps 2
rb_finish
