#!/usr/bin/env bash
# The fault and abuse suite's harness (issue 11), sourced by every surface script in this folder
# (cli.sh, cluster_file.sh, plan_file.sh, checkpoint.sh, control_plane.sh). A case runs one
# command as a hostile or careless user would and asserts, beyond its exit status and message:
#   - no orphan process: the command runs in a session of its own (setsid); once it has exited,
#     nothing of that session may be left running (leftovers are killed and the case fails);
#   - no lost or foreign file: every case runs in a fresh sandbox holding files the command must
#     not touch (keep/ and a regular file notes.txt), and a guard directory beside the sandbox
#     stands for everything outside it; both are checked byte for byte after the case, and the
#     guard directory must hold nothing new;
#   - bounded time: a case killed by its time limit fails (a hang is never an outcome).
# Each case appends one row to the surface's results (TSV: surface, case, expected, outcome,
# verdict); report.sh turns them into bench/results/robustness.md.
#
# Usage (in a surface script):
#   source "$(dirname "$0")/lib.sh"; rb_init SURFACE BIN_DIR [RESULTS_DIR]
#   rb_case NAME EXPECT PATTERN [--timeout S] [--setup FN] [--check FN] -- COMMAND...
#     EXPECT   exit status: a number, "fail" (1-125: an error, not a crash or a signal) or "ok" (0)
#     PATTERN  extended regex the combined stdout+stderr must match ("" for none)
#     --setup FN   a shell function run in the sandbox before the command (makes input files)
#     --check FN   a shell function run in the sandbox after it; non-zero fails the case
#   The command runs with the sandbox as working directory and $RB_SANDBOX naming it; $MESHPIPE
#   and $MESHPIPE_NODE name the binaries. rb_finish prints the summary and sets the exit status.
set -uo pipefail

rb_init() {
  RB_SURFACE="$1"
  RB_BIN="$(cd "$2" && pwd)"
  MESHPIPE="$RB_BIN/meshpipe"
  MESHPIPE_NODE="$RB_BIN/meshpipe-node"
  RB_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/meshpipe-robustness-$RB_SURFACE.XXXXXX")"
  RB_RESULTS_DIR="${3:-$RB_ROOT}"
  mkdir -p "$RB_RESULTS_DIR"
  RB_RESULTS="$RB_RESULTS_DIR/robustness-$RB_SURFACE.tsv"
  : > "$RB_RESULTS"
  RB_PASSED=0
  RB_FAILED=0
  RB_INDEX=0
  # Outside every sandbox: must stay as it is.
  mkdir -p "$RB_ROOT/guard"
  echo "a file outside the sandbox" > "$RB_ROOT/guard/outside.txt"
  export MESHPIPE MESHPIPE_NODE
  trap 'rm -rf "$RB_ROOT"' EXIT
}

# A digest of every file under a directory (names, modes and contents).
rb_digest() {
  (cd "$1" && find . -printf '%p %y %m\n' | sort && find . -type f -print0 | sort -z |
    xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

rb_case() {
  local name="$1" expect="$2" pattern="$3"
  shift 3
  local timeout=120 setup="" check=""
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      --timeout) timeout="$2"; shift 2 ;;
      --setup) setup="$2"; shift 2 ;;
      --check) check="$2"; shift 2 ;;
      *) echo "rb_case: unknown option $1" >&2; exit 2 ;;
    esac
  done
  shift  # --
  RB_INDEX=$((RB_INDEX + 1))
  local box="$RB_ROOT/case-$RB_INDEX"
  mkdir -p "$box/keep"
  echo "notes that must survive" > "$box/notes.txt"
  echo "a file the command must not touch" > "$box/keep/mine.txt"
  export RB_SANDBOX="$box"
  local verdict="ok" why=""
  if [ -n "$setup" ] && ! (cd "$box" && "$setup"); then
    verdict="FAIL"; why="setup failed"
  fi
  local keep_before guard_before
  keep_before="$(rb_digest "$box/keep")$(sha256sum < "$box/notes.txt")"
  guard_before="$(rb_digest "$RB_ROOT/guard")"
  local out="$RB_ROOT/out-$RB_INDEX" sidfile="$RB_ROOT/sid-$RB_INDEX" rc=0
  # A shell function of the surface script runs in a child bash (timeout needs a program).
  if declare -F "$1" > /dev/null; then
    export -f $(declare -F | awk '{print $3}')
    export MESHPIPE MESHPIPE_NODE RB_ROOT
    set -- bash -c '"$@"' rb_function "$@"
  fi
  if [ "$verdict" = ok ]; then
    (cd "$box" && setsid --wait bash -c 'echo $$ > "$0"; exec timeout -k 5 "$1" "${@:2}"' \
      "$sidfile" "$timeout" "$@" > "$out" 2>&1 < /dev/null)
    rc=$?
    local sid
    sid="$(cat "$sidfile" 2>/dev/null || echo 0)"
    sleep 0.2
    local left
    left="$(pgrep -s "$sid" 2>/dev/null | tr '\n' ' ')"
    if [ "$sid" != 0 ] && [ -n "$left" ]; then
      pkill -KILL -s "$sid" 2>/dev/null
      verdict="FAIL"; why="left processes running: $left"
    fi
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      verdict="FAIL"; why="timed out after ${timeout} s"
    fi
    case "$expect" in
      ok) [ $rc -eq 0 ] || { verdict="FAIL"; why="exit $rc, expected 0 ${why}"; } ;;
      fail) { [ $rc -ge 1 ] && [ $rc -le 125 ]; } ||
          { verdict="FAIL"; why="exit $rc, expected an error exit (1-125) ${why}"; } ;;
      *) [ $rc -eq "$expect" ] || { verdict="FAIL"; why="exit $rc, expected $expect ${why}"; } ;;
    esac
    if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$out"; then
      verdict="FAIL"; why="output lacks /$pattern/ ${why}"
    fi
    if [ "$keep_before" != "$(rb_digest "$box/keep")$(sha256sum < "$box/notes.txt" 2>/dev/null)" ]
    then
      verdict="FAIL"; why="a file in the sandbox that was not the command's changed ${why}"
    fi
    if [ "$guard_before" != "$(rb_digest "$RB_ROOT/guard")" ]; then
      verdict="FAIL"; why="a file outside the sandbox changed ${why}"
    fi
    if [ -n "$check" ] && ! (cd "$box" && "$check" "$out"); then
      verdict="FAIL"; why="check $check failed ${why}"
    fi
  fi
  # The outcome as a user sees it: the exit status and the first error line.
  local msg
  msg="$(grep -m1 -iE 'error|refus|cannot|limit|must|interrupt' "$out" 2>/dev/null |
    tr -d '\000-\010\013-\037' | cut -c1-160)"
  [ -z "$msg" ] && msg="$(tail -n1 "$out" 2>/dev/null | tr -d '\000-\037' | cut -c1-160)"
  local outcome="exit $rc: ${msg//|/\\|}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$RB_SURFACE" "$name" "$expect${pattern:+ /$pattern/}" \
    "$outcome" "$verdict${why:+: $why}" >> "$RB_RESULTS"
  if [ "$verdict" = ok ]; then
    RB_PASSED=$((RB_PASSED + 1))
    echo "ok   $name ($outcome)"
  else
    RB_FAILED=$((RB_FAILED + 1))
    echo "FAIL $name: $why"
    sed 's/^/     | /' "$out" | tail -n 20
  fi
}

rb_finish() {
  echo "$RB_SURFACE: $RB_PASSED passed, $RB_FAILED failed"
  [ "$RB_FAILED" -eq 0 ]
}
