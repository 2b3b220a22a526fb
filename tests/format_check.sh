#!/usr/bin/env bash
# Fails when a C++ file under src/, apps/, tests/, bench/ or examples/ differs from
# .clang-format (docs/style.md rule 11). Usage: format_check.sh SOURCE_DIR
set -euo pipefail
cd "$1"
if ! command -v clang-format >/dev/null 2>&1; then
  echo "WARNING: clang-format not found; format check skipped"
  exit 0
fi
mapfile -t files < <(find src apps tests bench examples \( -name '*.h' -o -name '*.cc' -o -name '*.cu' \) 2>/dev/null | sort)
if ! clang-format --dry-run -Werror "${files[@]}"; then
  echo "format drift: run  clang-format -i \$(find src apps tests bench examples -name '*.h' -o -name '*.cc')"
  exit 1
fi
echo "${#files[@]} files formatted"
