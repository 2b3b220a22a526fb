#!/usr/bin/env bash
# PyTorch models through ONNX, trained by meshpipe: train_compare.py defines an MLP (its loss in
# the model), a nanoGPT (also with a warm-up + cosine lr schedule and AdamW decay, PyTorch's
# LambdaLR, and once more with clip_grad_norm_ on top) and a small ResNet, exports them, writes
# fixed data as .npy arrays and trains each for 20 steps in PyTorch. meshpipe trains the same files on the same data, on one
# device and by a plan over 4 CPU devices, and every step's loss must agree with PyTorch's within
# 1e-4 relative (the ResNet's plan keeps one micro-batch: batch norm's statistics are per
# micro-batch), and with clipping every step's gradient norm must be PyTorch's within 1e-4 too,
# under plans that shard the model every way (tensor parallel, ZeRO-2/3, a pipeline). The GPT is also planned to a file and simulated, a 2-stage pipeline of it is
# trained from its plan file and by two node processes (losses against PyTorch's again), and
# the error paths are checked (a file without --model-file, another model's plan, bad data).
# Skipped with a warning when torch cannot be imported.
# Usage: train_compare_test.sh MESHPIPE PYTHON SCRATCH_DIR
set -euo pipefail
meshpipe="$1"; python="$2"; dir="$3"
if ! "$python" -c "import torch, numpy" >/dev/null 2>&1; then
  echo "WARNING: $python cannot import torch and numpy; the ONNX training test is skipped"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
"$python" "$(dirname "$0")/train_compare.py" "$dir" > "$dir/models.txt" 2> "$dir/export.log"
fail=0
compare() {  # compare NAME METRICS WHAT
  "$python" - "$dir/$1.losses" "$2" "$3" <<'PY' || fail=1
import json, os, sys
ref = [float(l) for l in open(sys.argv[1])]
lines = [json.loads(l) for l in open(sys.argv[2])]
got = [l["loss"] for l in lines if l["event"] == "step"]
norms_file = sys.argv[1][:-len(".losses")] + ".norms"
if os.path.exists(norms_file):  # clipping: the norm before clipping, step by step
    ref_norms = [float(l) for l in open(norms_file)]
    got_norms = [l.get("grad_norm") for l in lines if l["event"] == "step"]
    if None in got_norms or len(got_norms) != len(ref_norms):
        print(f"FAIL {sys.argv[3]}: no gradient norm in the metrics: {got_norms}"); sys.exit(1)
    bad = max(abs(a - b) / a for a, b in zip(ref_norms, got_norms))
    if bad > 1e-4:
        print(f"FAIL {sys.argv[3]}: gradient norms {got_norms[:4]}..., PyTorch's "
              f"{ref_norms[:4]}... (relative {bad:.2e})"); sys.exit(1)
    print(f"ok {sys.argv[3]}: 20 gradient norms within {bad:.2e} of clip_grad_norm_'s "
          f"({ref_norms[0]:.4f} -> {ref_norms[-1]:.4f})")
if lines[-1]["event"] != "summary" or lines[-1]["last_loss"] != got[-1]:
    print(f"FAIL {sys.argv[3]}: no summary line ending the metrics"); sys.exit(1)
if len(got) != len(ref):
    print(f"FAIL {sys.argv[3]}: {len(got)} steps, PyTorch {len(ref)}"); sys.exit(1)
worst = max(abs(a - b) / abs(a) for a, b in zip(ref, got))
step = max(range(len(ref)), key=lambda i: abs(ref[i] - got[i]) / abs(ref[i]))
if worst > 1e-4:
    print(f"FAIL {sys.argv[3]}: step {step + 1} loss {got[step]!r}, PyTorch {ref[step]!r} "
          f"(relative {worst:.2e})"); sys.exit(1)
print(f"ok {sys.argv[3]}: 20 losses within {worst:.2e} of PyTorch's "
      f"({ref[0]:.4f} -> {ref[-1]:.4f})")
PY
}
while read -r name batch steps optimizer lr loss extra; do
  # shellcheck disable=SC2206
  common=(--model-file "$dir/$name.onnx" --loss "$loss" --data "$dir/$name" --batch "$batch"
          --steps "$steps" --optimizer "$optimizer" --lr "$lr" $extra)
  if "$meshpipe" train "${common[@]}" --metrics "$dir/$name.one" > "$dir/$name.one.log" 2>&1; then
    compare "$name" "$dir/$name.one" "$name, one device"
  else
    echo "FAIL $name one device:"; tail -5 "$dir/$name.one.log"; fail=1
  fi
  extra=()
  [ "$name" = resnet ] && extra=(--micro-batches 1)
  if "$meshpipe" train "${common[@]}" --cluster cpu:1x4 "${extra[@]}" \
       --metrics "$dir/$name.four" > "$dir/$name.four.log" 2>&1; then
    compare "$name" "$dir/$name.four" "$name, plan over 4 CPU devices"
    grep -E "^[0-9]+ +[0-9-]+ +\(" "$dir/$name.four.log" | sed 's/^/    stage /' || true
  else
    echo "FAIL $name 4 devices:"; tail -5 "$dir/$name.four.log"; fail=1
  fi
done < "$dir/models.txt"
[ "$(wc -l < "$dir/models.txt")" = 5 ] || { echo "FAIL: expected 5 models"; fail=1; }

# The clipped GPT under written-down plans that shard it every way: the norm must count each
# gradient element once (tensor-parallel tiles, ZeRO's sharded gradients, replicas, stages).
clip=(--model-file "$dir/gpt_clip.onnx" --loss cross-entropy)
for grid in dp=1,tp=4 dp=2,tp=2,params=zero3 dp=4,params=zero2 dp=2,tp=1,pp=2; do
  if "$meshpipe" plan "${clip[@]}" --cluster cpu:1x4 --batch 8 --grid "$grid" --quiet \
       -o "$dir/clip.json" > "$dir/clip.log" 2>&1 &&
     "$meshpipe" train "${clip[@]}" --plan "$dir/clip.json" --data "$dir/gpt_clip" --steps 20 \
       --optimizer adam --lr 0.003 --weight-decay 0.1 --warmup-steps 5 --decay-steps 16 \
       --min-lr-ratio 0.1 --clip-grad-norm 0.5 --metrics "$dir/clip.$grid" >> "$dir/clip.log" 2>&1
  then
    compare gpt_clip "$dir/clip.$grid" "gpt with clipping, --grid $grid"
  else
    echo "FAIL: clipping under --grid $grid:"; tail -3 "$dir/clip.log"; fail=1
  fi
done

# A plan file for the imported GPT: simulated and trained from, and refused for another model.
gpt=(--model-file "$dir/gpt.onnx" --loss cross-entropy)
if ! "$meshpipe" plan "${gpt[@]}" --cluster cpu:1x4 --batch 8 --quiet -o "$dir/plan.json" \
     > "$dir/plan.log" 2>&1; then
  echo "FAIL: plan:"; tail -3 "$dir/plan.log"; fail=1
fi
if out=$("$meshpipe" simulate "$dir/plan.json" "${gpt[@]}" 2>&1) &&
   echo "$out" | grep -q "simulated step time"; then
  echo "ok: simulate of the imported GPT's plan"
else
  echo "FAIL: simulate: $out"; fail=1
fi
if out=$("$meshpipe" simulate "$dir/plan.json" 2>&1) || ! echo "$out" | grep -q "give its file"; then
  echo "FAIL: simulate without --model-file: $out"; fail=1
fi
if out=$("$meshpipe" simulate "$dir/plan.json" --model-file "$dir/mlp.onnx" 2>&1) ||
   ! echo "$out" | grep -q "is for 'onnx:gpt.onnx'"; then
  echo "FAIL: simulate with another model: $out"; fail=1
fi
# A written-down pipeline (2 stages of 2 devices, 2 micro-batches) trained from its plan file.
if "$meshpipe" plan "${gpt[@]}" --cluster cpu:1x4 --batch 8 --stages "0-1@1x2;2-3@1x2" \
     --layers 4 --micro-batches 2 --quiet -o "$dir/pipeline.json" > "$dir/pipeline.log" 2>&1 &&
   "$meshpipe" train "${gpt[@]}" --plan "$dir/pipeline.json" --data "$dir/gpt" --steps 20 \
     --optimizer adam --lr 0.003 --metrics "$dir/gpt.plan" > "$dir/gpt.plan.log" 2>&1; then
  compare gpt "$dir/gpt.plan" "gpt, a 2-stage pipeline of 2-device meshes from a plan file"
else
  echo "FAIL: train --plan:"; tail -3 "$dir/gpt.plan.log"; fail=1
fi

# Two node processes of 2 devices each on loopback (scripts/launch-local.sh), the GPT with the
# warm-up and cosine schedule, AdamW's decay and clipping: every node reads the file and the
# data itself, sets each step's rate and agrees on the norm; losses and norms must be PyTorch's.
bin_dir=$(cd "$(dirname "$meshpipe")" && pwd)
if MESHPIPE_BIN="$bin_dir" MESHPIPE_LOG_DIR="$dir/nodes" timeout 300 \
     "$(dirname "$0")/../../scripts/launch-local.sh" 2 2 -- --model-file "$dir/gpt_clip.onnx" \
     --loss cross-entropy --data "$dir/gpt_clip" --batch 8 --steps 20 --optimizer adam \
     --lr 0.003 --weight-decay 0.1 --warmup-steps 5 --decay-steps 16 --min-lr-ratio 0.1 \
     --clip-grad-norm 0.5 --metrics "$dir/gpt.nodes" > "$dir/nodes.log" 2>&1; then
  compare gpt_clip "$dir/gpt.nodes" "gpt with the lr schedule and clipping, 2 node processes x 2 devices"
else
  echo "FAIL: 2 nodes:"; tail -5 "$dir/nodes.log"; fail=1
fi

# Bad data: a token outside the embedding, an array of the wrong shape, a missing file.
mkdir -p "$dir/bad1" "$dir/bad2"
"$python" - "$dir" <<'PY'
import sys, numpy as np
d = sys.argv[1]
idx = np.load(f"{d}/gpt/idx.npy"); idx[3, 5] = 64
np.save(f"{d}/bad1/idx.npy", idx); np.save(f"{d}/bad1/labels.npy", np.load(f"{d}/gpt/labels.npy"))
np.save(f"{d}/bad2/idx.npy", np.zeros((16, 15), dtype=np.int64))
np.save(f"{d}/bad2/labels.npy", np.load(f"{d}/gpt/labels.npy"))
PY
expect_error() {  # expect_error PATTERN ARGS...
  local pattern="$1"; shift
  if out=$("$meshpipe" train "$@" --steps 1 2>&1) || ! echo "$out" | grep -q "$pattern"; then
    echo "FAIL: expected an error with '$pattern': $out"; fail=1
  else
    echo "ok: $(echo "$out" | grep error | head -1 | cut -c1-150)"
  fi
}
expect_error "outside \[0, 64)" "${gpt[@]}" --data "$dir/bad1" --batch 8
expect_error "the input needs (N, 16)" "${gpt[@]}" --data "$dir/bad2" --batch 8
expect_error "data for input 'idx'" "${gpt[@]}" --data "$dir" --batch 8
expect_error "not 'output' or\|scalar\|loss" --model-file "$dir/gpt.onnx" --batch 8
exit $fail
