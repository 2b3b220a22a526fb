#!/usr/bin/env bash
# `meshpipe train --model gpt-tiny --cluster cpu:2x2 --steps 20` plans, trains on 4 virtual CPU
# devices and prints a line per step (loss falling), then measured next to predicted peak memory
# per device; `--plan` trains a plan saved by `meshpipe plan`; `meshpipe simulate` times it and
# writes a Chrome trace; a checkpoint resumes under another plan; a plan for another model, a
# missing checkpoint and a bad cluster are clear errors.
set -euo pipefail
bin="$1"
dir="$2"
mkdir -p "$dir"
out=$("$bin" train --model gpt-tiny --cluster cpu:2x2 --steps 20)
echo "$out" | tail -8
steps=$(echo "$out" | grep -c '^step ')
[ "$steps" -eq 20 ] || { echo "expected 20 step lines, got $steps"; exit 1; }
first=$(echo "$out" | grep '^step ' | head -1 | awk '{print $4}')
last=$(echo "$out" | grep '^step ' | tail -1 | awk '{print $4}')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 4.0 && l < f - 0.3) }' || {
  echo "loss did not fall: $first -> $last"; exit 1; }
echo "$out" | grep -q 'measured peak' || { echo "no memory table"; exit 1; }
rows=$(echo "$out" | awk '/measured peak/ {t=1; next} t && NF >= 6' | wc -l)
[ "$rows" -eq 4 ] || { echo "expected 4 device rows, got $rows"; exit 1; }

"$bin" plan --model gpt-tiny --cluster cpu:2x2 --micro-batches 2 -o "$dir/plan.json" --quiet \
  > /dev/null
out=$("$bin" train --model gpt-tiny --plan "$dir/plan.json" --steps 3)
[ "$(echo "$out" | grep -c '^step ')" -eq 3 ] || { echo "--plan run failed"; exit 1; }

out=$("$bin" simulate "$dir/plan.json" --trace "$dir/trace.json")
echo "$out" | tail -4
echo "$out" | grep -q '^simulated step time: .*ratio' || { echo "no simulated step time"; exit 1; }
echo "$out" | grep -q '^bubble fraction: ' || { echo "no bubble fraction"; exit 1; }
/usr/bin/python3 -c "import json, sys; t = json.load(open(sys.argv[1]))['traceEvents']; \
  assert any(e['ph'] == 'X' for e in t) and any(e['ph'] == 'C' for e in t)" "$dir/trace.json" ||
  { echo "trace is not valid Chrome trace JSON"; exit 1; }
if "$bin" simulate "$dir/missing.json" 2> "$dir/err.txt"; then echo "simulated a missing file"; exit 1; fi

# A checkpoint written on 4 devices resumes on 2 (another plan) and continues the curve of an
# uninterrupted single-device run.
"$bin" train --model gpt-tiny --cluster cpu:2x2 --steps 3 --save "$dir/ckpt" > /dev/null
resumed=$("$bin" train --model gpt-tiny --cluster cpu:1x2 --micro-batches 2 --steps 3 \
  --load "$dir/ckpt" | grep '^step ' | awk '{print $2, $4}')
whole=$("$bin" train --model gpt-tiny --steps 6 | grep '^step ' | tail -3 | awk '{print $2, $4}')
echo "resumed: $resumed"
[ "$resumed" = "$whole" ] || { echo "resumed run left the single-device curve: $whole"; exit 1; }
if "$bin" train --model gpt-tiny --steps 1 --load "$dir/no-such-ckpt" 2> "$dir/err.txt"; then
  echo "loaded a missing checkpoint"; exit 1
fi
grep -q "checkpoint .*/no-such-ckpt: no such directory" "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }

if "$bin" train --model moe-tiny --plan "$dir/plan.json" --steps 1 2> "$dir/err.txt"; then
  echo "a plan for gpt-tiny trained moe-tiny"; exit 1
fi
grep -q "plan for model 'gpt-tiny'" "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }
if "$bin" train --model gpt-tiny --cluster cpu:3x3 --steps 1 2> "$dir/err.txt"; then
  echo "cpu:3x3 accepted"; exit 1
fi
grep -q "error" "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }
echo ok
