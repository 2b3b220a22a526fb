#!/usr/bin/env bash
# Fault and abuse suite, surface: the command line of `meshpipe` (issue 11). Usage: cli.sh BIN_DIR
source "$(dirname "$0")/lib.sh"
rb_init cli "$1" "${2:-}"

rb_case "save into a directory holding other files" fail "keep" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save keep
rb_case "save onto a regular file" fail "notes.txt" \
  -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save notes.txt
rb_case "lr nan" fail "lr" -- "$MESHPIPE" train --model gpt-tiny --steps 1 --lr nan
rb_case "a plain run" ok "done" -- "$MESHPIPE" train --model gpt-tiny --steps 2

rb_finish
