#!/usr/bin/env bash
# Regenerates the PyTorch oracle data into a scratch directory and runs the oracle test cases
# against it. Usage: run_live.sh PYTHON RUNTIME_TESTS SCRATCH_DIR
set -euo pipefail
python="$1"; tests="$2"; dir="$3"
if ! "$python" -c "import torch, numpy" >/dev/null 2>&1; then
  echo "WARNING: $python cannot import torch and numpy; the live oracle comparison is skipped"
  exit 0
fi
rm -rf "$dir"
"$python" "$(dirname "$0")/generate.py" "$dir"
MP_ORACLE_DIR="$dir" "$tests" "[oracle]"
