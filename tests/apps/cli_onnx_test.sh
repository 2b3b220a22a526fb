#!/usr/bin/env bash
# `meshpipe models --file`: PyTorch exports a nanoGPT (tied head, causal mask buffer, exact
# GELU), an MLP and a CNN with batch norm; meshpipe's parameter count for each must equal
# PyTorch's (the mask buffer and the running statistics are not parameters; the tied weight
# counts once). A truncated file and a directory are named errors. Skipped with a warning when
# torch cannot be imported. Usage: cli_onnx_test.sh MESHPIPE PYTHON SCRATCH_DIR
set -euo pipefail
meshpipe="$1"; python="$2"; dir="$3"
if ! "$python" -c "import torch" >/dev/null 2>&1; then
  echo "WARNING: $python cannot import torch; the ONNX CLI test is skipped"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
"$python" "$(dirname "$0")/../onnx/export_models.py" "$dir" > "$dir/counts.txt"
fail=0
while read -r name count loss; do
  out=$("$meshpipe" models --file "$dir/$name.onnx" --loss "$loss") || { echo "FAIL $name: $out"; fail=1; continue; }
  got=$(echo "$out" | sed -n 's/^parameters: \([0-9]*\) .*/\1/p')
  if [ "$got" != "$count" ]; then
    echo "FAIL $name: meshpipe counts $got parameters, PyTorch $count"; fail=1
  else
    echo "ok $name: $count parameters"
  fi
done < "$dir/counts.txt"
head -c 100 "$dir/gpt.onnx" > "$dir/truncated.onnx"
if out=$("$meshpipe" models --file "$dir/truncated.onnx" 2>&1); then
  echo "FAIL: a truncated file was accepted"; fail=1
elif ! echo "$out" | grep -q "truncated file"; then
  echo "FAIL: truncated file message: $out"; fail=1
fi
if out=$("$meshpipe" models --file "$dir" 2>&1) || ! echo "$out" | grep -q "not a regular file"; then
  echo "FAIL: directory: $out"; fail=1
fi
exit $fail
