#!/usr/bin/env bash
# Fault and abuse suite, surface: cluster files given to `meshpipe plan/train --cluster FILE`
# (issue 11): hostile sizes, names, nesting and file types. Usage: cluster_file.sh BIN_DIR [DIR]
source "$(dirname "$0")/lib.sh"
rb_init cluster_file "$1" "${2:-}"

# Writes c.json: the cpu:1x2 preset's cluster with one field replaced (a Python expression).
cluster_with() {  # cluster_with 'c["hosts"] = 5'
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
c = {"name": "test", "hosts": 1, "devices_per_host": 2,
     "device": {"kind": "cpu", "memory_gib": 4.0, "peak_tflops_f32": 0.05,
                "peak_tflops_f16": 0.05, "memory_bandwidth_gb_s": 10.0},
     "intra_host": {"bandwidth_gb_s": 5.0, "latency_us": 20.0},
     "inter_host": {"bandwidth_gb_s": 1.5, "latency_us": 50.0}}
exec(sys.argv[1])
json.dump(c, open("c.json", "w"))
PY
}
plan_c() { "$MESHPIPE" plan --model gpt-tiny --micro-batches 2 --quiet --cluster c.json; }

good() { cluster_with 'pass'; }
rb_case "a good cluster file plans" ok "stage" --setup good -- plan_c
many_hosts() { cluster_with 'c["hosts"] = 1000000'; }
rb_case "a million hosts" 2 "more than the 1024 meshpipe plans for" --timeout 20 \
  --setup many_hosts -- plan_c
overflow() { cluster_with 'c["hosts"] = 2**40'; }
rb_case "hosts beyond 32 bits" 2 "cluster" --timeout 20 --setup overflow -- plan_c
escape_name() { cluster_with 'c["name"] = "\x1b]0;pwned\x07\x1b[2J"'; }
no_escape() { ! grep -q $'\x1b' "$1"; }
rb_case "a name with terminal escapes" 2 "control characters" --setup escape_name \
  --check no_escape -- plan_c
escape_kind() { cluster_with 'c["device"]["kind"] = "gpu\x1b[31m"'; }
rb_case "a device kind with terminal escapes" 2 "device.kind.*control characters" \
  --setup escape_kind --check no_escape -- plan_c
long_name() { cluster_with 'c["name"] = "x" * 100000'; }
rb_case "a 100 kB name" 2 "more than the 256 allowed" --setup long_name -- plan_c
bad_memory() { cluster_with 'c["device"]["memory_gib"] = -4'; }
rb_case "negative memory" 2 "memory_gib" --setup bad_memory -- plan_c
nan_memory() { cluster_with 'c["device"]["memory_gib"] = float("nan")'; }
rb_case "NaN memory (not JSON)" 2 "malformed" --setup nan_memory -- plan_c
not_pow2() { cluster_with 'c["devices_per_host"] = 3'; }
rb_case "3 devices per host" 2 "power of two" --setup not_pow2 -- plan_c
unknown_field() { cluster_with 'c["devcies"] = 2'; }
rb_case "a misspelt field" 2 "devcies" --setup unknown_field -- plan_c
dup_key() { cluster_with 'pass'; sed -i 's/^{/{"hosts": 64, /' c.json; }
rb_case "a key given twice" 2 "the key 'hosts' appears twice" --setup dup_key -- plan_c
deep() { /usr/bin/python3 -c "print('{\"a\":' * 100000 + '1' + '}' * 100000)" > c.json; }
rb_case "JSON nested 100,000 deep" 2 "nest deeper than 64 levels" --timeout 20 --setup deep \
  -- plan_c
truncated() { cluster_with 'pass'; head -c 100 c.json > t && mv t c.json; }
rb_case "a truncated file" 2 "malformed" --setup truncated -- plan_c
rb_case "/dev/zero" 2 "character device, not a regular file" --timeout 20 \
  -- "$MESHPIPE" plan --model gpt-tiny --cluster /dev/zero
fifo() { mkfifo c.json; }
rb_case "a FIFO" 2 "FIFO, not a regular file" --timeout 20 --setup fifo -- plan_c
huge() { truncate -s 100M c.json; }
rb_case "a 100 MB file" fail "larger than the 64.00 MiB limit" --timeout 20 --setup huge -- plan_c
rb_case "a missing file" 2 "no-such.json" -- "$MESHPIPE" plan --model gpt-tiny \
  --cluster no-such.json
rb_finish
