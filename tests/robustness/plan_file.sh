#!/usr/bin/env bash
# Fault and abuse suite, surface: plan files given to `meshpipe explain/train/simulate --plan`
# (issue 11): specs and layouts that do not fit, types the format does not have, names with
# terminal escapes, nesting, conflicting options. Usage: plan_file.sh BIN_DIR [RESULTS_DIR]
source "$(dirname "$0")/lib.sh"
rb_init plan_file "$1" "${2:-}"

"$MESHPIPE" plan --model gpt-tiny --cluster cpu:1x2 --micro-batches 2 --quiet \
  -o "$RB_ROOT/good.json" > /dev/null || { echo "cannot make a plan"; exit 1; }
# Writes p.json: the good plan with one change (a Python statement on `p`).
plan_with() {
  /usr/bin/python3 - "$1" "$RB_ROOT/good.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[2]))
s0 = p["stages"][0]
exec(sys.argv[1])
json.dump(p, open("p.json", "w"))
PY
}
explain_p() { "$MESHPIPE" explain p.json; }
train_p() { "$MESHPIPE" train --plan p.json --steps 1; }

good() { plan_with 'pass'; }
rb_case "a good plan trains" ok "done: loss" --setup good -- train_p
rb_case "--micro-batches with --plan" fail "excludes" --setup good \
  -- "$MESHPIPE" train --plan p.json --micro-batches 4 --steps 1
bad_dim() { plan_with 's0["value_specs"]["embed/ln_beta"] = "S9,Q,R"'; }
rb_case "spec S9,Q,R (explain)" 2 "bad dim 'S9'" --setup bad_dim -- explain_p
rb_case "spec S9,Q,R (train)" 2 "bad dim 'S9'" --setup bad_dim -- train_p
rank5() { plan_with 's0["value_specs"]["embed/ln_beta"] = "R,R,R,R,R"'; }
rb_case "a 5-D spec on a 1-D value (explain)" 2 "has rank 5 but shape \[32\] has rank 1" \
  --setup rank5 -- explain_p
rb_case "a 5-D spec on a 1-D value (train)" 2 "has rank 5 but shape \[32\] has rank 1" \
  --setup rank5 -- train_p
axis_twice() { plan_with 's0["value_specs"]["layer0/attn/wq"] = "S0,S0"'; }
rb_case "a spec using one mesh axis twice" 2 "layer0/attn/wq" --setup axis_twice -- train_p
bad_layout() { plan_with 's0["op_layouts"]["embed/ln"] = "S0,R,R,R,R,R,R"'; }
rb_case "an op layout of the wrong rank" fail "embed/ln" --setup bad_layout -- train_p
complex() { plan_with 'p["dtype"] = "complex128"'; }
rb_case "dtype complex128" 2 "'complex128' is not a dtype" --setup complex -- explain_p
escape_model() { plan_with 'p["model"] = "\x1b]0;pwned\x07\x1b[2J"'; }
no_escape() { ! grep -q $'\x1b' "$1"; }
rb_case "a model name with terminal escapes" 2 "control characters" --setup escape_model \
  --check no_escape -- explain_p
escape_op() { plan_with 's0["op_strategies"]["embed/ln"] = "R\x1b[31m"'; }
rb_case "an op strategy with terminal escapes" 2 "control characters" --setup escape_op \
  --check no_escape -- explain_p
other_model() { plan_with 'p["model"] = "moe-tiny"'; }
rb_case "a plan for another model" 2 "moe-tiny" --setup other_model -- train_p
negative_mb() { plan_with 'p["micro_batches"] = -4'; }
rb_case "negative micro-batches" 2 "micro_batches" --setup negative_mb -- explain_p
huge_devices() { plan_with 's0["devices"] = [0, 99999999]'; }
rb_case "a device beyond the cluster" 2 "device" --setup huge_devices -- train_p
huge_batch() { plan_with 'p["global_batch"] = 4 * 250000000000; p["micro_batch"] = 250000000000; p["micro_batches"] = 4'; }
rb_case "a global batch of 10^12 (simulate)" 2 "more than the 1048576 a plan may have" \
  --setup huge_batch -- "$MESHPIPE" simulate p.json
many_mb() { plan_with 'p["global_batch"] = 1000000; p["micro_batch"] = 1; p["micro_batches"] = 1000000'; }
rb_case "a million micro-batches (train)" 2 "more than the 4096 a plan may have" --timeout 30 \
  --setup many_mb -- train_p
deep() { /usr/bin/python3 -c "print('[' * 200000 + ']' * 200000)" > p.json; }
rb_case "JSON nested 200,000 deep" 2 "nest deeper than 64 levels" --timeout 20 --setup deep \
  -- explain_p
truncated() { plan_with 'pass'; head -c 500 p.json > t && mv t p.json; }
rb_case "a truncated plan" 2 "malformed" --setup truncated -- train_p
rb_case "a plan on /dev/zero" 2 "character device, not a regular file" --timeout 20 \
  -- "$MESHPIPE" train --plan /dev/zero --steps 1
onto_dir() { plan_with 'pass'; }
rb_case "plan -o onto a directory" 2 "it exists and is a directory" \
  -- "$MESHPIPE" plan --model gpt-tiny --cluster cpu:1x2 --micro-batches 2 --quiet -o keep
rb_finish
