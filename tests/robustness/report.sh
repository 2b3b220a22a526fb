#!/usr/bin/env bash
# Runs every surface of the fault and abuse suite and writes its table (case, expected, outcome,
# verdict) as Markdown: bench/results/robustness.md. Usage: report.sh BIN_DIR [OUT.md] [BEFORE]
# BEFORE: a folder of robustness-*.tsv written by the same surfaces against an older build
# (`SURFACE.sh OLD_BIN_DIR BEFORE`); its outcomes become a "before" column.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "$1" && pwd)"
out="${2:-$here/../../bench/results/robustness.md}"
before="${3:-}"
results="$(mktemp -d "${TMPDIR:-/tmp}/meshpipe-robustness-report.XXXXXX")"
trap 'rm -rf "$results"' EXIT
status=0
before_label="${BEFORE_LABEL:-older build}"
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
  if [ -n "$before" ]; then
    echo "Before: the same cases against the build before issue 11 ($before_label); '-' where"
    echo "the case did not exist then."
    echo
    echo "| surface | case | expected | before | outcome | verdict |"
    echo "|---|---|---|---|---|---|"
    /usr/bin/python3 - "$results" "$before" <<'PY'
import csv, glob, os, sys
def rows(folder):
    out = []
    for f in sorted(glob.glob(os.path.join(folder, "robustness-*.tsv"))):
        out += [r for r in csv.reader(open(f), delimiter="\t", quoting=csv.QUOTE_NONE)]
    return out
old = {(r[0], r[1]): r[3] for r in rows(sys.argv[2]) if len(r) >= 4}
cell = lambda t: t.replace("|", "\\|")
for r in rows(sys.argv[1]):
    print("| " + " | ".join(cell(c) for c in [r[0], r[1], r[2], old.get((r[0], r[1]), "-"), r[3], r[4]]) + " |")
PY
  else
    echo "| surface | case | expected | outcome | verdict |"
    echo "|---|---|---|---|---|"
    cat "$results"/robustness-*.tsv | sed 's/|/\\|/g; s/\t/ | /g; s/^/| /; s/$/ |/'
  fi
  echo
  echo "$(cat "$results"/robustness-*.tsv | grep -c $'\tok$') of $(cat "$results"/robustness-*.tsv | wc -l) cases as expected."
} > "$out"
echo "wrote $out"
exit $status
