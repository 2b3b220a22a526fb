#!/usr/bin/env bash
# Token-file data through `meshpipe train --data FILE`: scripts/tokenize-bytes.py turns a text
# (the README) into llm.c's layout; gpt-cpu (vocabulary 1024) trains on it and its loss falls;
# a run stopped after 3 steps and resumed from its checkpoint reads exactly the batches of an
# uninterrupted one (the same losses to the last digit); a plan over 2 x 2 devices reads the
# same batches as one device (the same losses within float rounding); the validation share is
# kept out; a model whose vocabulary is too small is refused naming the token.
# Usage: token_data_test.sh MESHPIPE SRC_DIR SCRATCH_DIR
set -uo pipefail
meshpipe="$1"; src="$2"; dir="$3"
rm -rf "$dir" && mkdir -p "$dir"
fail=0
/usr/bin/python3 "$src/scripts/tokenize-bytes.py" "$dir/readme.bin" "$src/README.md" || exit 1
common=(--model gpt-cpu --batch 4 --data "$dir/readme.bin" --optimizer adam --lr 0.003)
losses() { grep '^step ' "$1" | awk '{split($2, s, "/"); print s[1], $4}'; }
"$meshpipe" train "${common[@]}" --steps 6 --metrics "$dir/whole.jsonl" > "$dir/whole.log" 2>&1 ||
  { echo "FAIL: training on the token file:"; tail -3 "$dir/whole.log"; exit 1; }
/usr/bin/python3 - "$dir/whole.jsonl" <<'PY' || fail=1
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l and '"event": "step"' in l]
first, last = steps[0]["loss"], steps[-1]["loss"]
if not (first > 6.5 and last < first - 1.0):
    print(f"FAIL: loss {first:.4f} -> {last:.4f} on the README's bytes (expected from ~ln 1024 "
          "= 6.93 down by more than 1)"); sys.exit(1)
print(f"ok: gpt-cpu on the README's bytes: loss {first:.4f} -> {last:.4f} in 6 steps")
PY
"$meshpipe" train "${common[@]}" --steps 3 --save "$dir/ck" > "$dir/first.log" 2>&1 &&
  "$meshpipe" train "${common[@]}" --steps 3 --load "$dir/ck" > "$dir/second.log" 2>&1 ||
  { echo "FAIL: save/resume:"; tail -3 "$dir/first.log" "$dir/second.log"; fail=1; }
resumed="$(losses "$dir/first.log"; losses "$dir/second.log")"
if [ "$resumed" = "$(losses "$dir/whole.log")" ]; then
  echo "ok: stopped after 3 steps and resumed, the same batches and losses as 6 straight steps"
else
  echo "FAIL: resumed losses differ:"; echo "$resumed"; losses "$dir/whole.log"; fail=1
fi
"$meshpipe" train "${common[@]}" --steps 6 --cluster cpu:2x2 --micro-batches 1 \
  > "$dir/four.log" 2>&1 || { echo "FAIL: 4 devices:"; tail -3 "$dir/four.log"; fail=1; }
/usr/bin/python3 - "$dir/whole.log" "$dir/four.log" <<'PY' || fail=1
import sys
def losses(p): return [float(l.split()[3]) for l in open(p) if l.startswith("step ")]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
worst = max(abs(x - y) / x for x, y in zip(a, b))
if len(a) != 6 or len(b) != 6 or worst > 2e-4:
    print(f"FAIL: 4 devices {b} vs one {a}"); sys.exit(1)
print(f"ok: a plan over 2 x 2 devices reads the same batches (losses within {worst:.1e})")
PY
if out=$("$meshpipe" train --model gpt-tiny --data "$dir/readme.bin" --steps 1 2>&1) ||
   ! echo "$out" | grep -q "outside the model's vocabulary \[0, 64)"; then
  echo "FAIL: gpt-tiny (vocabulary 64) on bytes: $out"; fail=1
else
  echo "ok: $(echo "$out" | grep error)"
fi
if out=$("$meshpipe" train "${common[@]}" --val-fraction 1.5 --steps 1 2>&1); then
  echo "FAIL: --val-fraction 1.5 accepted"; fail=1
fi
exit $fail
