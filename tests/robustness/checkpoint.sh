#!/usr/bin/env bash
# Fault and abuse suite, surface: checkpoints (issue 11). One real checkpoint is made at the start;
# each load case copies it into its sandbox, damages it one way and resumes from it: every one must
# fail before training with a message naming the problem, read nothing outside the checkpoint and
# never hang. The save cases point --save at places a save must not take (the harness checks that
# keep/ and notes.txt are unchanged) and at places it may. Usage: checkpoint.sh BIN_DIR [RESULTS]
source "$(dirname "$0")/lib.sh"
rb_init checkpoint "$1" "${2:-}"

TEMPLATE="$RB_ROOT/ck-template"
if ! "$MESHPIPE" train --model gpt-tiny --steps 2 --save "$TEMPLATE" > "$RB_ROOT/template.log" 2>&1
then
  echo "checkpoint: cannot make the checkpoint the cases start from:"
  cat "$RB_ROOT/template.log"
  exit 1
fi
RESUME=("$MESHPIPE" train --model gpt-tiny --steps 1 --load ck)

# --- helpers run in a case's sandbox ---------------------------------------------------------

ck_copy() { cp -r "$TEMPLATE" ck; }
# Replaces the first tile file's name in the manifest by $1.
ck_rename_tile() { sed -i "s#\"tile-d0-0.bin\"#\"$1\"#" ck/manifest.json; }
# Replaces tile-d0-0.bin by a symbolic link to $1.
ck_link_tile() { rm ck/tile-d0-0.bin && ln -s "$1" ck/tile-d0-0.bin; }
# Two tile files of the same size and different contents (their names, on one line).
ck_same_size_pair() {
  (cd ck && stat -c '%s %n' tile-*.bin | sort -n | awk '
    $1 == size { for (i = 1; i <= n; i++) print names[i], $2 }
    $1 != size { size = $1; n = 0 }
    { names[++n] = $2 }') | while read -r a b; do
    if ! cmp -s "ck/$a" "ck/$b"; then echo "$a $b"; break; fi
  done
}
# The output ($1) shows no training step: the case failed before training.
no_training() { ! grep -Eq '^step +[0-9]+/' "$1"; }
# No partial or old directory of a save is left in the sandbox.
no_leftovers() { ! ls -d ck.partial-* ck.old-* > /dev/null 2>&1; }

# --- loading a damaged checkpoint --------------------------------------------------------------

setup_dotdot() { ck_copy && cp ck/tile-d0-0.bin x && ck_rename_tile ../x; }
rb_case "tile file ../x" fail "must be a file name in the checkpoint directory" \
  --setup setup_dotdot --check no_training -- "${RESUME[@]}"

setup_passwd() { ck_copy && ck_rename_tile /etc/passwd; }
rb_case "tile file /etc/passwd" fail "must be a file name in the checkpoint directory" \
  --setup setup_passwd --check no_training -- "${RESUME[@]}"

setup_symlink() { ck_copy && cp ck/tile-d0-0.bin outside.bin && ck_link_tile ../outside.bin; }
rb_case "tile a symlink to a file of the right size" fail "tile-d0-0.bin is a symbolic link" \
  --setup setup_symlink --check no_training -- "${RESUME[@]}"

setup_dev_zero() { ck_copy && ck_link_tile /dev/zero; }
rb_case "tile a symlink to /dev/zero" fail "tile-d0-0.bin is a symbolic link" \
  --setup setup_dev_zero --check no_training -- "${RESUME[@]}"

setup_fifo() { ck_copy && rm ck/tile-d0-0.bin && mkfifo ck/tile-d0-0.bin; }
rb_case "tile a FIFO (reading would block)" fail "tile-d0-0.bin is a FIFO, not a regular file" \
  --timeout 30 --setup setup_fifo --check no_training -- "${RESUME[@]}"

setup_dir() { ck_copy && rm ck/tile-d0-0.bin && mkdir ck/tile-d0-0.bin; }
rb_case "tile a directory" fail "tile-d0-0.bin is a directory, not a regular file" \
  --setup setup_dir --check no_training -- "${RESUME[@]}"

setup_proc_mem() { ck_copy && ck_link_tile /proc/self/mem; }
rb_case "tile a symlink to /proc/self/mem" fail "tile-d0-0.bin is a symbolic link" \
  --setup setup_proc_mem --check no_training -- "${RESUME[@]}"

setup_bit_flip() {
  ck_copy || return 1
  local b
  b=$(od -An -tu1 -j100 -N1 ck/tile-d0-0.bin | tr -d ' ')
  printf "\\$(printf '%03o' $((b ^ 4)))" |
    dd of=ck/tile-d0-0.bin bs=1 seek=100 conv=notrunc status=none
}
rb_case "a bit flipped in a tile" fail "checksum mismatch: the tile is corrupted" \
  --setup setup_bit_flip --check no_training -- "${RESUME[@]}"

setup_swap() {
  ck_copy || return 1
  local pair a b
  pair=$(ck_same_size_pair)
  [ -n "$pair" ] || { echo "no two tiles of one size differ"; return 1; }
  read -r a b <<< "$pair"
  mv "ck/$a" ck/swap && mv "ck/$b" "ck/$a" && mv ck/swap "ck/$b"
}
rb_case "two tiles of the same size swapped" fail "checksum mismatch: the tile is corrupted" \
  --setup setup_swap --check no_training -- "${RESUME[@]}"

setup_truncated() { ck_copy && truncate -s 10 ck/tile-d0-0.bin; }
rb_case "a truncated tile" fail "tile-d0-0.bin has 10 bytes, its region needs [0-9]+" \
  --setup setup_truncated --check no_training -- "${RESUME[@]}"

setup_oversized() { ck_copy && truncate -s 1G ck/tile-d0-0.bin; }
rb_case "an oversized (sparse 1 GiB) tile" fail \
  "tile-d0-0.bin has 1073741824 bytes, its region needs [0-9]+" \
  --setup setup_oversized --check no_training -- "${RESUME[@]}"

setup_step() { ck_copy && sed -i 's/"step": 2,/"step": -5,/' ck/manifest.json; }
rb_case "manifest step -5" fail "field 'step' must be a non-negative integer" \
  --setup setup_step --check no_training -- "${RESUME[@]}"

setup_not_json() { ck_copy && echo 'not JSON {' > ck/manifest.json; }
rb_case "manifest not JSON" fail "manifest is malformed" \
  --setup setup_not_json --check no_training -- "${RESUME[@]}"

setup_huge_manifest() { ck_copy && truncate -s 100M ck/manifest.json; }
rb_case "a 100 MB manifest (sparse)" fail "more than the 64 MiB a manifest may have" \
  --setup setup_huge_manifest --check no_training -- "${RESUME[@]}"

setup_step_huge() { ck_copy && sed -i 's/"step": 2,/"step": 9223372036854775805,/' ck/manifest.json; }
rb_case "manifest step near 2^63 (overflows a resumed run)" fail "field 'step' must be at most" \
  --setup setup_step_huge --check no_training -- "${RESUME[@]}"

# Edits the manifest with a Python statement on `m` (the parsed JSON).
ck_manifest() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
m = json.load(open("ck/manifest.json"))
exec(sys.argv[1])
json.dump(m, open("ck/manifest.json", "w"))
PY
}
setup_reused_file() {
  ck_copy && ck_manifest '
v = next(v for v in m["values"] if len(v["tiles"]) == 1 and len(v["shape"]) == 2 and v["shape"][0] > 1)
t = v["tiles"][0]
rows = v["shape"][0]
a = dict(t, begin=[0, 0], extent=[1, v["shape"][1]])
b = dict(t, begin=[1, 0], extent=[rows - 1, v["shape"][1]])
v["tiles"] = [a, b]'
}
rb_case "one tile file behind two regions" fail "which another tile names too" \
  --setup setup_reused_file --check no_training -- "${RESUME[@]}"
setup_double_tile() {
  ck_copy && ck_manifest '
v = next(v for v in m["values"] if len(v["tiles"]) == 1 and len(v["shape"]) == 2)
v["tiles"] = [v["tiles"][0], dict(v["tiles"][0], file="tile-d0-999.bin")]'
  cp ck/tile-d0-0.bin ck/tile-d0-999.bin
}
rb_case "one tile listed twice to fake coverage" fail "overlaps the tile in" \
  --setup setup_double_tile --check no_training -- "${RESUME[@]}"

setup_version_1() { ck_copy && sed -i 's/"version": 2,/"version": 1,/' ck/manifest.json; }
rb_case "a version 1 manifest" fail "field 'version' is 1, a checkpoint without tile checksums" \
  --setup setup_version_1 --check no_training -- "${RESUME[@]}"

setup_manifest_link() { ck_copy && mv ck/manifest.json m.json && ln -s ../m.json ck/manifest.json; }
rb_case "manifest a symlink" fail "manifest.json is a symbolic link" \
  --setup setup_manifest_link --check no_training -- "${RESUME[@]}"

rb_case "checkpoint a regular file" fail "checkpoint notes.txt: not a directory" \
  --check no_training -- "$MESHPIPE" train --model gpt-tiny --steps 1 --load notes.txt

rb_case "a good resume" ok "step +3/3" --setup ck_copy -- "${RESUME[@]}"

# --- saving ------------------------------------------------------------------------------------

rb_case "save into a directory of other files" fail \
  "keep is not empty and not a meshpipe checkpoint \(it has no manifest.json and holds mine.txt\)" \
  --check no_training -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save keep

rb_case "save onto a regular file" fail \
  "notes.txt is a file, not a checkpoint directory; not overwritten" \
  --check no_training -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save notes.txt

rb_case "save under a regular file" fail "notes.txt is not a directory" \
  --check no_training -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save notes.txt/ck

setup_foreign() { ck_copy && echo "my notes" > ck/notes.md; }
check_foreign() { no_training "$1" && [ "$(cat ck/notes.md)" = "my notes" ] && [ -f ck/manifest.json ]; }
rb_case "save into a checkpoint holding a foreign file" fail \
  "ck holds notes.md, which its checkpoint manifest does not list; not overwritten" \
  --setup setup_foreign --check check_foreign -- \
  "$MESHPIPE" train --model gpt-tiny --steps 1 --save ck

if [ "$(id -u)" = 0 ]; then
  # As root a directory of mode 555 does not stop writes: /sys refuses new directories to root.
  rb_case "save into an unwritable place (as root: /sys; chmod 555 would not stop root)" fail \
    "cannot save to /sys/meshpipe-robustness-ck: cannot create" \
    --check no_training -- \
    "$MESHPIPE" train --model gpt-tiny --steps 1 --save /sys/meshpipe-robustness-ck
else
  setup_read_only() { mkdir ro && chmod 555 ro; }
  rb_case "save into a read-only directory" fail "cannot create ro/ck.partial-[0-9]+: Permission" \
    --setup setup_read_only --check no_training -- \
    "$MESHPIPE" train --model gpt-tiny --steps 1 --save ro/ck
fi

save_twice() {
  "$MESHPIPE" train --model gpt-tiny --steps 1 --save ck &&
    "$MESHPIPE" train --model gpt-tiny --steps 2 --save ck
}
check_second() {
  no_leftovers && grep -q '"step": 2,' ck/manifest.json &&
    "$MESHPIPE" train --model gpt-tiny --steps 1 --load ck > resume.log 2>&1 &&
    grep -Eq 'step +3/3' resume.log
}
rb_case "save twice into one directory (the second replaces the first)" ok "checkpoint: ck" \
  --check check_second -- bash -c "$(declare -f save_twice); save_twice"

setup_empty() { mkdir ck; }
check_saved() { no_leftovers && [ -f ck/manifest.json ]; }
rb_case "save into an empty directory" ok "checkpoint: ck" --setup setup_empty \
  --check check_saved -- "$MESHPIPE" train --model gpt-tiny --steps 1 --save ck

rb_case "save-every without a save directory" fail "save.?every" \
  --check no_training -- "$MESHPIPE" train --model gpt-tiny --steps 2 --save-every 1

rb_finish
