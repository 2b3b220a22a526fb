#!/usr/bin/env bash
# The cost-model fidelity benchmark (issue 14): predicted step time and memory held against
# measured runs, 1 and 2 processes. See bench/fidelity.py for what it measures; its options pass
# through (e.g. --quick, --models gpt-cpu, --modes 1, --repeats 3).
#   bench/fidelity.sh [--bin build/bin] [--out bench/results/fidelity.md]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "$(command -v /usr/bin/python3 || command -v python3)" bench/fidelity.py "$@"
