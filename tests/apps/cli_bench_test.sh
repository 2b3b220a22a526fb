#!/usr/bin/env bash
# `meshpipe bench scaling` end to end on a suite file of tiny points: the table, the figure and
# the results file; a second run resumes (every point skipped, nothing appended); a results file
# cut off mid-line is repaired; bad suites and options fail naming the problem.
# Usage: cli_bench_test.sh MESHPIPE SCRATCH_DIR
set -uo pipefail
bin="$1"; dir="$2"
rm -rf "$dir"; mkdir -p "$dir"; cd "$dir" || exit 1
printf '# two tiny points\ngpt-tiny 1\ngpt-tiny 2 16\n' > tiny.txt

out=$("$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate 2>err.txt) || {
  cat err.txt; echo "$out"; echo "FAIL: bench scaling exited non-zero"; exit 1; }
echo "$out"
res=meshpipe-bench/scaling-tiny-cpu-1x2-simulate
for f in results.jsonl table.md figure.svg fig8-intra-op.svg fig9-inter-op.svg fig11-resharding.svg; do
  [ -s "$res/$f" ] || { echo "FAIL: no $res/$f"; exit 1; }
done
[ "$(wc -l < "$res/results.jsonl")" -eq 2 ] || { echo "FAIL: expected 2 result lines"; exit 1; }
for want in "| gpt-tiny | 2 | meshpipe | ok |" "data parallel" "ZeRO-3" "Megatron grid" \
            "equal operators" "inter-op only" "weak-scaling efficiency"; do
  echo "$out" | grep -qF -- "$want" || { echo "FAIL: table lacks '$want'"; exit 1; }
done
grep -q "<polyline" "$res/figure.svg" || { echo "FAIL: the figure has no line"; exit 1; }
grep -q "on 2 devices: meshpipe: planning (0/11 systems)" err.txt &&
  grep -q "on 2 devices: done (11/11 systems)" err.txt || { cat err.txt; echo "FAIL: no progress lines"; exit 1; }

# Resumed: both points are in the results already.
before=$(md5sum < "$res/results.jsonl")
out=$("$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate 2>err.txt) || {
  cat err.txt; echo "FAIL: the resumed run exited non-zero"; exit 1; }
[ "$(grep -c "already" err.txt)" -eq 2 ] || { cat err.txt; echo "FAIL: points not skipped"; exit 1; }
[ "$(md5sum < "$res/results.jsonl")" = "$before" ] || { echo "FAIL: results changed"; exit 1; }

# A run stopped while writing its last line: that point runs again, the file is whole after.
head -n 1 "$res/results.jsonl" > cut && tail -n 1 "$res/results.jsonl" | head -c 100 >> cut
mv cut "$res/results.jsonl"
"$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate -q > /dev/null 2>err.txt || {
  cat err.txt; echo "FAIL: the run after a cut-off line failed"; exit 1; }
[ "$(wc -l < "$res/results.jsonl")" -eq 2 ] || { echo "FAIL: not repaired"; exit 1; }
/usr/bin/python3 -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" \
  "$res/results.jsonl" || { echo "FAIL: results.jsonl is not JSON lines"; exit 1; }

# Stopped while writing its first line: the fragment goes, the point runs again.
head -c 80 "$res/results.jsonl" > cut && mv cut "$res/results.jsonl"
"$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate -q > /dev/null 2>err.txt || {
  cat err.txt; echo "FAIL: the run after a cut-off first line failed"; exit 1; }
[ "$(wc -l < "$res/results.jsonl")" -eq 2 ] || { echo "FAIL: first line not repaired"; exit 1; }

# Asking for systems a result lacks runs the point again (one line per point still).
"$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate --out "$dir/few" -q \
  --systems "meshpipe, ZeRO-3" > /dev/null 2>&1 || { echo "FAIL: --systems run failed"; exit 1; }
[ "$(grep -o '"system"' "$dir/few/results.jsonl" | wc -l)" -eq 4 ] || {
  echo "FAIL: --systems did not limit the systems"; exit 1; }
"$bin" bench scaling --suite tiny.txt --cluster cpu:1x2 --simulate --out "$dir/few" -q \
  > /dev/null 2>&1 || { echo "FAIL: the full run after a --systems run failed"; exit 1; }
[ "$(wc -l < "$dir/few/results.jsonl")" -eq 2 ] || { echo "FAIL: duplicate lines"; exit 1; }
[ "$(grep -o '"system"' "$dir/few/results.jsonl" | wc -l)" -eq 22 ] || {
  echo "FAIL: the missing systems were not run"; exit 1; }

# Errors: exit 2 naming the problem, no crash.
expect_error() {  # expect_error WANT ARGS...
  local want="$1"; shift
  local msg; msg=$("$bin" bench scaling "$@" 2>&1); local rc=$?
  if [ $rc -ne 2 ]; then echo "$msg"; echo "FAIL: '$*' exited $rc, expected 2"; exit 1; fi
  echo "$msg" | grep -qF -- "$want" || { echo "$msg"; echo "FAIL: '$*' lacks '$want'"; exit 1; }
}
printf 'gpt-tiny 1\nbert-base 2\n' > bad.txt
expect_error "bad.txt:2" --suite bad.txt --cluster cpu:1x2 --simulate
expect_error "no built-in suite 'nosuch'" --suite nosuch --simulate
expect_error "--simulate" --suite tiny.txt --cluster cpu:1x2
printf 'gpt-tiny 3\n' > three.txt
expect_error "not a whole number of" --suite three.txt --cluster cpu:1x2 --simulate
expect_error "no system 'DeepSpeed'" --suite tiny.txt --cluster cpu:1x2 --simulate --out "$dir/y" \
  --systems meshpipe,DeepSpeed
[ ! -e "$dir/y" ] || { echo "FAIL: a refused run created its folder"; exit 1; }
# --run: the points measured with one meshpipe-node process per device; none left behind (the
# nodes carry this test's tag in their environment).
tag="MP_CLI_BENCH_TEST=$$"
out=$(env "$tag" "$bin" bench scaling --suite tiny.txt --run --steps 3 --max-devices 2 \
  --out "$dir/run" 2>err.txt) || {
  cat err.txt; echo "$out"; echo "FAIL: bench scaling --run exited non-zero"; exit 1; }
echo "$out" | tail -4
[ "$(wc -l < "$dir/run/results.jsonl")" -eq 2 ] || { echo "FAIL: expected 2 measured points"; exit 1; }
grep -q '"mode":"run"' "$dir/run/results.jsonl" || { echo "FAIL: not marked as measured"; exit 1; }
echo "$out" | grep -qF "step time s (measured)" || { echo "FAIL: table not marked measured"; exit 1; }
echo "$out" | grep -qF "| gpt-tiny | 2 | meshpipe | ok |" || { echo "FAIL: no 2-device row"; exit 1; }
ls "$dir/run"/gpt-tiny-2-devices-batch-16-node1.log > /dev/null || { echo "FAIL: no node log"; exit 1; }
if grep -lsa "$tag" /proc/[0-9]*/environ | grep -qv "^/proc/$$/"; then
  echo "FAIL: node processes left behind"; exit 1
fi
expect_error "--systems is for --simulate" --suite tiny.txt --run --systems meshpipe --out "$dir/z"
expect_error "--simulate (the simulated backend" --suite tiny.txt --simulate --run

echo "cli_bench: ok"
