#!/usr/bin/env bash
# Runs every surface of the fault and abuse suite and writes its table (case, expected, outcome,
# verdict) as Markdown: bench/results/robustness.md. Usage: report.sh BIN_DIR [OUT.md]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "$1" && pwd)"
out="${2:-$here/../../bench/results/robustness.md}"
results="$(mktemp -d "${TMPDIR:-/tmp}/meshpipe-robustness-report.XXXXXX")"
trap 'rm -rf "$results"' EXIT
status=0
for s in "$here"/*.sh; do
  case "$(basename "$s")" in lib.sh|report.sh) continue ;; esac
  echo "== $(basename "$s")"
  "$s" "$bin" "$results" || status=1
done
{
  echo "# Fault and abuse suite"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
  echo "date $(date -u '+%Y-%m-%d %H:%M') UTC; load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Produced by \`tests/robustness/report.sh build/bin\`; the same cases run in \`make test\`"
  echo "(ctest -R robustness). Every case also asserts that no process of it is left running, that"
  echo "no file in its sandbox that it did not own changed and that nothing outside it changed."
  echo
  echo "| surface | case | expected | outcome | verdict |"
  echo "|---|---|---|---|---|"
  cat "$results"/robustness-*.tsv | sed 's/|/\\|/g; s/\t/ | /g; s/^/| /; s/$/ |/'
  echo
  echo "$(cat "$results"/robustness-*.tsv | grep -c $'\tok$') of $(cat "$results"/robustness-*.tsv | wc -l) cases as expected."
} > "$out"
echo "wrote $out"
exit $status
