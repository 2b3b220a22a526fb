#!/usr/bin/env bash
# Multi-process jobs on loopback (scripts/launch-local.sh): a driver and meshpipe-node processes
# train gpt-tiny to the losses of one device with a pipeline across processes (2 x 2 devices)
# and over 3 processes; data parallelism over 2 processes x 2 devices (two-level collectives, UCX
# and Gloo); ZeRO-3 over 2 processes x 1 device (UCX and Gloo);
# gpt-tiny and wresnet-tiny with a data-parallel mesh spanning 2 processes (a cluster file with a fast network makes the planner choose it); a checkpoint saved
# by one cluster resumes on another and on one process. Killing a node mid-training stops the
# job with an error naming the node and the other node exits; killing the driver ends every
# node; a stopped node is named within
# the liveness bound; a node pointed at no coordinator and a driver given a bad cluster file
# fail with clear errors; a node joins through the machine's network address (not loopback), with
# the secret the driver wrote to a file; a node started with --driver drives the job and runs
# devices. (Refused, hostile and silent peers: tests/robustness/control_plane.sh.)
set -uo pipefail
bin_dir="$1"
src="$2"
dir="$3"
rm -rf "$dir"
mkdir -p "$dir"
export MESHPIPE_BIN="$bin_dir" UCX_NET_DEVICES=lo
# The job's secret, for every driver and node below (launch-local.sh passes it on too).
MESHPIPE_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export MESHPIPE_SECRET
launch="$src/scripts/launch-local.sh"
losses() { grep '^step ' | awk '{print $2, $4}'; }

expect_same() {  # name, single-device losses, cluster losses
  echo "$1: $3" | tr '\n' ' '
  echo
  [ -n "$3" ] && [ "$2" = "$3" ] || { echo "$1 differs from one device: $2"; exit 1; }
}

# The port a driver started in the background prints to FILE (waits up to 10 s for it).
port_of() {
  local port=""
  for _ in $(seq 1 100); do
    port=$(grep -o 'listening on [0-9.]*:[0-9]*' "$1" 2> /dev/null | sed 's/.*://')
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.1
  done
  cat "$1" >&2
  echo "no coordinator port in $1" >&2
  return 1
}

# A job that must succeed, with every process gone at the end (launch-local.sh fails otherwise).
job() {  # log dir, launch arguments...
  local log=$1
  shift
  MESHPIPE_LOG_DIR="$log" timeout 120 "$launch" "$@" > "$log.out" 2>&1 ||
    { cat "$log.out"; echo "job failed: $*"; exit 1; }
  cat "$log.out"
}

one=$("$bin_dir/meshpipe" train --model gpt-tiny --steps 4 | losses)
two=$(job "$dir/a" 2 2 -- --model gpt-tiny --steps 4 --micro-batches 2) || exit 1
expect_same "2 processes x 2 devices (pipeline across processes)" "$one" "$(echo "$two" | losses)"
three=$(job "$dir/b" 3 1 -- --model gpt-tiny --steps 4) || exit 1
expect_same "3 processes x 1 device" "$one" "$(echo "$three" | losses)"
# f16 with dynamic loss scaling across processes: the overflow verdict crosses the processes
# (UCX), every device skips the first steps together, the scale comes down and training goes on.
f16=$(job "$dir/f16" 2 2 -- --model gpt-tiny --steps 16 --micro-batches 2 --precision f16 \
  --initial-loss-scale 1e9) || exit 1
skipped=$(echo "$f16" | grep -c '^step .*overflow, update skipped' || true)
first=$(echo "$f16" | grep '^step ' | head -1 | awk '{print $4}')
last=$(echo "$f16" | grep '^step ' | tail -1 | awk '{print $4}')
echo "$f16" | grep '^step ' | head -1 | grep -q 'loss scale 1e+09: overflow' &&
  [ "$skipped" -ge 3 ] && echo "$f16" | grep -q "^loss scaling: $skipped of 16 steps skipped" &&
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f) }' ||
  { echo "$f16"; echo "f16 loss scaling across processes: $skipped skipped, $first -> $last"; exit 1; }
# Stage-to-stage messages above UCX's rendezvous threshold (gpt-cpu's 256 KiB activations)
# between stages whose devices also meet in collectives: this hung in its first step until the
# transport sent every message eagerly.
big_one=$("$bin_dir/meshpipe" train --model gpt-cpu --steps 2 | losses)
"$bin_dir/meshpipe" plan --quiet --model gpt-cpu --cluster cpu:2x2 --batch 16 --micro-batches 4 \
  --grid dp=2,tp=1,pp=2 -o "$dir/big.json" > /dev/null || { echo "plan of gpt-cpu failed"; exit 1; }
big=$(job "$dir/big" 2 2 -- --model gpt-cpu --plan "$dir/big.json" --steps 2 \
  --step-timeout-ms 30000) || exit 1
expect_same "gpt-cpu dp 2 x pp 2 on 2 processes (large messages)" "$big_one" \
  "$(echo "$big" | losses)"

# Groups of 2 devices in each of 2 processes run in two levels (shared memory in a process, UCX
# or Gloo between the processes' first devices): data parallel over all 4 devices, wresnet-tiny
# (batch norm all-reduces; one micro-batch, as batch statistics are per micro-batch) and
# moe-tiny (all-to-all).
for model in wresnet-tiny moe-tiny; do
  ref=$("$bin_dir/meshpipe" train --model "$model" --steps 3 | losses)
  "$bin_dir/meshpipe" plan --quiet --model "$model" --cluster cpu:2x2 --micro-batches 1 \
    --grid dp=4,tp=1,pp=1 -o "$dir/$model-dp4.json" > /dev/null ||
    { echo "plan of $model failed"; exit 1; }
  for coll in ucx gloo; do
    out=$(job "$dir/$model-dp4-$coll" 2 2 -- --model "$model" --plan "$dir/$model-dp4.json" \
      --steps 3 --collectives "$coll") || exit 1
    expect_same "$model dp 4 on 2 processes x 2 devices (two-level collectives, $coll)" "$ref" \
      "$(echo "$out" | losses)"
  done
done
# Flat groups across processes (one device in each): gpt-tiny ZeRO-3 (all-gathers and
# reduce-scatters of every parameter) over 2 processes x 1 device, UCX and Gloo.
"$bin_dir/meshpipe" plan --quiet --model gpt-tiny --cluster cpu:2x1 --micro-batches 2 \
  --grid dp=2,tp=1,pp=1,params=zero3 -o "$dir/z3.json" > /dev/null ||
  { echo "plan of gpt-tiny ZeRO-3 failed"; exit 1; }
for coll in ucx gloo; do
  out=$(job "$dir/z3-$coll" 2 1 -- --model gpt-tiny --plan "$dir/z3.json" --steps 4 \
    --collectives "$coll") || exit 1
  expect_same "gpt-tiny ZeRO-3 on 2 processes x 1 device ($coll)" "$one" "$(echo "$out" | losses)"
done
# In-process collectives cannot reach across nodes: a clear error, no job.
if "$bin_dir/meshpipe" train --listen 0 --nodes 2 --model gpt-tiny --steps 1 \
  --collectives in-process > "$dir/inproc.txt" 2>&1; then
  echo "--collectives in-process with --listen was accepted"; exit 1
fi
grep -q "cannot reach across nodes" "$dir/inproc.txt" || { cat "$dir/inproc.txt"; exit 1; }

# Checkpoints across processes: saved by 2 nodes x 2 devices (every node writes its own tiles),
# resumed by 3 nodes x 1 device (another plan), and by one process: the losses continue the
# single-device curve.
steps() { grep '^step ' | awk '{split($2, s, "/"); print s[1], $4}'; }
six=$("$bin_dir/meshpipe" train --model gpt-tiny --steps 6 | steps)
first=$(job "$dir/s1" 2 2 -- --model gpt-tiny --steps 3 --micro-batches 2 --save "$dir/ckpt") ||
  exit 1
ls "$dir/ckpt" | grep -q '^tile-d[23]-' || { echo "node 1 wrote no tiles"; exit 1; }
ls "$dir/ckpt" | grep -q '^tile-d[01]-' || { echo "node 0 wrote no tiles"; exit 1; }
rest=$(job "$dir/s2" 3 1 -- --model gpt-tiny --steps 3 --load "$dir/ckpt") || exit 1
expect_same "saved by 2 x 2, resumed by 3 x 1" "$six" "$( (echo "$first"; echo "$rest") | steps)"
rest=$("$bin_dir/meshpipe" train --model gpt-tiny --cluster cpu:1x4 --steps 3 --load "$dir/ckpt")
expect_same "saved by 2 x 2, resumed by one process" "$six" "$( (echo "$first"; echo "$rest") | steps)"

cat > "$dir/fastnet.json" << 'JSON'
{"name": "fastnet", "hosts": 1, "devices_per_host": 1,
 "device": {"kind": "cpu", "memory_gib": 4, "peak_tflops_f32": 0.05, "peak_tflops_f16": 0.05,
            "memory_bandwidth_gb_s": 10},
 "intra_host": {"bandwidth_gb_s": 5, "latency_us": 20},
 "inter_host": {"bandwidth_gb_s": 100, "latency_us": 1}}
JSON
out=$(job "$dir/g" 2 1 -- --model gpt-tiny --steps 4 --micro-batches 1 \
  --cluster "$dir/fastnet.json") || exit 1
echo "$out" | grep -q '^0 .*(2, 1) .*0-1 ' || { echo "$out"; echo "expected one (2, 1) stage"; exit 1; }
expect_same "gpt-tiny, a (2, 1) mesh over 2 processes" "$one" "$(echo "$out" | losses)"
sgd="--optimizer sgd --momentum 0.9"
one=$("$bin_dir/meshpipe" train --model wresnet-tiny --steps 3 $sgd | losses)
out=$(job "$dir/c" 2 1 -- --model wresnet-tiny --steps 3 $sgd --micro-batches 1 \
  --cluster "$dir/fastnet.json") || exit 1
echo "$out" | grep -q '^0 .*(2, 1) .*0-1 ' || { echo "$out"; echo "expected one (2, 1) stage"; exit 1; }
expect_same "data parallel mesh over 2 processes" "$one" "$(echo "$out" | losses)"

# Kill a node mid-training: the driver names it and aborts the step on the other node, so
# everything exits within seconds (the step timeout is its default, 60 s).
mkdir -p "$dir/k"
start=$(date +%s)
(MESHPIPE_LOG_DIR="$dir/k" timeout 120 "$launch" 2 2 -- --model gpt-tiny --steps 1000000 \
  --micro-batches 2 > "$dir/k/launch.out" 2>&1
 echo "rc=$?" >> "$dir/k/launch.out") &
for _ in $(seq 1 200); do grep -q '^step ' "$dir/k/launch.out" 2> /dev/null && break; sleep 0.1; done
victim=$(awk '{print $3}' "$dir/k/pids")
kill -9 "$victim"
for _ in $(seq 1 300); do grep -q '^rc=' "$dir/k/launch.out" && break; sleep 0.1; done
elapsed=$(( $(date +%s) - start ))
grep -E 'error|rc=' "$dir/k/launch.out"
grep -qE "node [0-9] \(.* pid $victim\) disconnected (during|after) step" "$dir/k/launch.out" ||
  { echo "the driver did not name the killed node"; exit 1; }
grep -q '^rc=[1-9]' "$dir/k/launch.out" || { echo "the job did not fail"; exit 1; }
[ "$elapsed" -lt 20 ] || { echo "took $elapsed s"; exit 1; }
grep -q "did not exit" "$dir/k/launch.out" && { echo "a node had to be killed"; exit 1; }
for p in $(sed 's/nodes: //' "$dir/k/pids"); do
  if kill -0 "$p" 2> /dev/null; then echo "node $p is still running"; exit 1; fi
done

# Kill the driver mid-training: the nodes see the coordinator go, abort their step and exit.
mkdir -p "$dir/d"
(MESHPIPE_LOG_DIR="$dir/d" timeout 120 "$launch" 2 2 -- --model gpt-tiny --steps 1000000 \
  --micro-batches 2 > "$dir/d/launch.out" 2>&1
 echo "rc=$?" >> "$dir/d/launch.out") &
for _ in $(seq 1 200); do grep -q '^step ' "$dir/d/launch.out" 2> /dev/null && break; sleep 0.1; done
kill -9 "$(pgrep -f "meshpipe train --listen 0 --nodes 2 --model gpt-tiny --steps 1000000")"
for _ in $(seq 1 300); do grep -q '^rc=' "$dir/d/launch.out" && break; sleep 0.1; done
grep -q "did not exit" "$dir/d/launch.out" && { cat "$dir/d/launch.out"; echo "a node outlived the driver"; exit 1; }
grep -q "coordinator disconnected" "$dir/d/node1.out" ||
  { cat "$dir/d/node1.out"; echo "node 1 did not report the lost coordinator"; exit 1; }
for p in $(sed 's/nodes: //' "$dir/d/pids"); do
  if kill -0 "$p" 2> /dev/null; then echo "node $p is still running"; exit 1; fi
done

# Stop (not kill) a node of a mesh that spans both: its heartbeat goes silent and the driver
# names it within the liveness bound (2 s here), far below the step timeout (60 s). The other
# node, blocked in a Gloo collective with the stopped one, exits within its abort grace.
mkdir -p "$dir/s"
start=$(date +%s)
(MESHPIPE_LOG_DIR="$dir/s" timeout 120 "$launch" 2 1 -- --model gpt-tiny --steps 1000000 \
  --micro-batches 1 --cluster "$dir/fastnet.json" --liveness-ms 2000 > "$dir/s/launch.out" 2>&1
 echo "rc=$?" >> "$dir/s/launch.out") &
for _ in $(seq 1 200); do grep -q '^step ' "$dir/s/launch.out" 2> /dev/null && break; sleep 0.1; done
victim=$(awk '{print $3}' "$dir/s/pids")
kill -STOP "$victim"
for _ in $(seq 1 300); do grep -q '^rc=' "$dir/s/launch.out" && break; sleep 0.1; done
elapsed=$(( $(date +%s) - start ))
kill -KILL "$victim" 2> /dev/null
grep -E 'error|rc=' "$dir/s/launch.out"
grep -q "node [0-9] (.* pid $victim) stopped answering" "$dir/s/launch.out" ||
  { echo "the driver did not name the stopped node"; exit 1; }
# The other node was told to abort its step and exited by itself (only the stopped one is
# killed by launch-local.sh).
survivor=$(awk -v v="$victim" '{for (i = 2; i <= NF; ++i) if ($i != v) print $i}' "$dir/s/pids")
grep -q "process $survivor did not exit" "$dir/s/launch.out" &&
  { echo "node $survivor did not exit after the abort"; exit 1; }
grep -qE "exiting \(the job failed: (step [0-9]+: )?node .* stopped answering|the job was aborted \(node .* stopped answering.*exiting" "$dir/s/node"*.out ||
  { cat "$dir/s/node"*.out; echo "the surviving node was not told why the job ended"; exit 1; }
[ "$elapsed" -lt 40 ] || { echo "took $elapsed s"; exit 1; }

# A node started with --driver is the driver and one of the nodes (here with 2 devices, the
# first pipeline stage); a second node joins it.
"$bin_dir/meshpipe-node" --driver --devices 2 -- --listen 0 --nodes 2 --model gpt-tiny \
  --steps 4 --micro-batches 2 --join-timeout-ms 30000 > "$dir/drv.out" 2>&1 &
driver=$!
port=$(port_of "$dir/drv.out") || exit 1
timeout 60 "$bin_dir/meshpipe-node" --coordinator "127.0.0.1:$port" --devices 2 \
  > "$dir/drv-node.out" 2>&1 || { cat "$dir/drv-node.out"; echo "node of --driver failed"; exit 1; }
wait "$driver" || { cat "$dir/drv.out"; echo "meshpipe-node --driver failed"; exit 1; }
grep -q "node [01]: .* (pid $driver), 2 devices" "$dir/drv.out" ||
  { cat "$dir/drv.out"; echo "the driver runs no node of its own"; exit 1; }
expect_same "meshpipe-node --driver + 1 node" "$(echo "$six" | head -4)" "$(steps < "$dir/drv.out")"

# A node that reaches the coordinator through this machine's network address, not loopback
# (the coordinator's gate listens on every interface), when the machine has one; the driver
# writes a new secret to a file (mode 0600) and the node reads it from there.
ip=$(hostname -I 2> /dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -1)
if [ -n "$ip" ]; then
  env -u MESHPIPE_SECRET "$bin_dir/meshpipe" train --listen 0 --nodes 1 --steps 2 \
    --join-timeout-ms 30000 --write-secret "$dir/net.secret" > "$dir/net.out" 2>&1 &
  driver=$!
  port=$(port_of "$dir/net.out") || exit 1
  [ "$(stat -c %a "$dir/net.secret")" = 600 ] || { ls -l "$dir/net.secret"; echo "secret file not 0600"; exit 1; }
  timeout 60 env -u MESHPIPE_SECRET "$bin_dir/meshpipe-node" --coordinator "$ip:$port" \
    --devices 1 --bind "$ip" --secret-file "$dir/net.secret" > "$dir/net-node.out" 2>&1 ||
    { cat "$dir/net-node.out"; echo "node via $ip failed"; exit 1; }
  wait "$driver" || { cat "$dir/net.out"; echo "driver failed"; exit 1; }
  expect_same "a node joining through $ip" "$(echo "$six" | head -2)" "$(steps < "$dir/net.out")"
fi

if timeout 30 "$bin_dir/meshpipe-node" --coordinator 127.0.0.1:1 --devices 1 2> "$dir/err.txt"; then
  echo "a node without a coordinator succeeded"; exit 1
fi
grep -q "cannot reach the coordinator at 127.0.0.1:1" "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }
if timeout 30 "$bin_dir/meshpipe" train --listen 0 --nodes 1 --cluster "$dir/none.json" \
  2> "$dir/err.txt"; then
  echo "a bad cluster file was accepted"; exit 1
fi
grep -q "none.json" "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }
echo ok
