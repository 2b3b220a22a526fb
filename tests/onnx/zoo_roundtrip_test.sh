#!/usr/bin/env bash
# Round trip of the zoo's GPT: zoo_gpt.py writes a PyTorch GPT with the configuration of a zoo
# model (gpt-tiny at opset 13, where LayerNorm is decomposed; gpt-cpu at opset 17, where it is
# one LayerNormalization node) and exports it; meshpipe's import of that file must have exactly
# the parameter count of the zoo's own graph (and PyTorch's) and exactly its forward FLOPs.
# Skipped with a warning when torch cannot be imported.
# Usage: zoo_roundtrip_test.sh MESHPIPE PYTHON SCRATCH_DIR
set -euo pipefail
meshpipe="$1"; python="$2"; dir="$3"
if ! "$python" -c "import torch" >/dev/null 2>&1; then
  echo "WARNING: $python cannot import torch; the zoo round-trip test is skipped"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
fail=0
# name: seq hidden layers heads vocab ffn_mult batch opset (the zoo's configurations)
while read -r name config; do
  torch_count=$("$python" "$(dirname "$0")/zoo_gpt.py" "$dir/$name.onnx" $config 2> /dev/null)
  zoo=$("$meshpipe" models --model "$name")
  imported=$("$meshpipe" models --file "$dir/$name.onnx" --loss cross-entropy)
  zp=$(echo "$zoo" | sed -n 's/^parameters: \([0-9]*\) .*/\1/p')
  ip=$(echo "$imported" | sed -n 's/^parameters: \([0-9]*\) .*/\1/p')
  zf=$(echo "$zoo" | sed -n 's/^forward: .*(\([0-9]*\) FLOP).*/\1/p')
  if_=$(echo "$imported" | sed -n 's/^forward: .*(\([0-9]*\) FLOP).*/\1/p')
  if [ -z "$zp" ] || [ "$zp" != "$ip" ] || [ "$zp" != "$torch_count" ]; then
    echo "FAIL $name: parameters zoo $zp, imported $ip, PyTorch $torch_count"; fail=1
  elif [ -z "$zf" ] || [ "$zf" != "$if_" ]; then
    echo "FAIL $name: forward FLOPs zoo $zf, imported $if_"; fail=1
  else
    echo "ok $name: $zp parameters and $zf forward FLOPs, zoo = imported PyTorch export"
  fi
done <<'CONFIGS'
gpt-tiny 16 32 2 4 64 4 8 13
gpt-cpu 64 256 4 8 1024 4 16 17
CONFIGS
exit $fail
