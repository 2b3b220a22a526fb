#!/usr/bin/env bash
# Fault and abuse suite, surface: the cluster's control plane (issue 11): the coordinator that
# `meshpipe train --listen` publishes behind its gate, meshpipe-node, scripts/launch-local.sh.
# Hostile peers (a wrong secret, garbage, the 36-byte huge-length BASP header, a silent
# connection, one node too many), failures (kill -9 and SIGSTOP of a node, a silent listener)
# and signals; every case also asserts that no process is left (lib.sh). Hostile peers are
# /usr/bin/python3 socket scripts (control_plane_peer.py). Usage: control_plane.sh BIN_DIR
source "$(dirname "$0")/lib.sh"
rb_init control_plane "$1" "${2:-}"
here="$(cd "$(dirname "$0")" && pwd)"
export PEER="$here/control_plane_peer.py"
export LAUNCH="$here/../../scripts/launch-local.sh"
export MESHPIPE_BIN="$RB_BIN" UCX_NET_DEVICES=lo
MESHPIPE_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export MESHPIPE_SECRET
export TRAIN="--model gpt-tiny"

# The port a driver started in the background prints to FILE (waits up to 10 s).
port_of() {
  local port=""
  for _ in $(seq 1 200); do
    port=$(grep -o 'listening on [0-9.]*:[0-9]*' "$1" 2> /dev/null | sed 's/.*://')
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.05
  done
  echo "no coordinator port in $1" >&2
  return 1
}
# Waits (up to 30 s) until FILE holds a line matching PATTERN.
wait_for() {
  for _ in $(seq 1 600); do
    grep -qE "$2" "$1" 2> /dev/null && return 0
    sleep 0.05
  done
  echo "timed out waiting for /$2/ in $1" >&2
  return 1
}
export -f port_of wait_for

case_job() {
  "$LAUNCH" 2 1 -- $TRAIN --steps 3
}

case_wrong_secret() {
  "$MESHPIPE" train $TRAIN --steps 2 --listen 0 --nodes 1 --join-timeout-ms 20000 \
    > driver.out 2>&1 &
  local driver=$! port rc
  port=$(port_of driver.out) || return 1
  MESHPIPE_SECRET=not-the-secret-of-this-job "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port"
  rc=$?
  # The job goes on: the real node joins after the refused one.
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port" > node.out 2>&1
  wait "$driver" || { cat driver.out; echo "the job failed after the refused node"; return 1; }
  grep "refused a connection" driver.out
  return $rc
}

# Garbage and the 36-byte packet at the gate while the job waits for its nodes: both are closed
# at once, the driver stays small, and the job then completes.
case_garbage() {
  "$MESHPIPE" train $TRAIN --steps 2 --listen 0 --nodes 2 --join-timeout-ms 20000 \
    > driver.out 2>&1 &
  local driver=$! port hwm
  port=$(port_of driver.out) || return 1
  /usr/bin/python3 "$PEER" garbage 127.0.0.1 "$port" || return 1
  /usr/bin/python3 "$PEER" basp 127.0.0.1 "$port" || return 1
  sleep 0.5
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$driver/status")
  echo "driver peak resident memory after the packets: $hwm kB"
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port" > node1.out 2>&1 &
  local n1=$!
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port" > node2.out 2>&1
  local rc2=$?
  wait "$n1" || { cat node1.out; return 1; }
  [ "$rc2" -eq 0 ] || { cat node2.out; return 1; }
  wait "$driver" || { cat driver.out; return 1; }
  cat driver.out
  [ "$hwm" -lt 262144 ] || { echo "the driver grew to $hwm kB"; return 1; }
}

# A peer that connects and says nothing holds no one up: a node joins at once.
case_silent_peer() {
  "$MESHPIPE" train $TRAIN --steps 2 --listen 0 --nodes 1 --join-timeout-ms 20000 \
    > driver.out 2>&1 &
  local driver=$! port t0 t1
  port=$(port_of driver.out) || return 1
  /usr/bin/python3 "$PEER" silent 127.0.0.1 "$port" 8 > silent.out 2>&1 &
  local silent=$!
  sleep 0.3
  t0=$(date +%s%N)
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port" > node.out 2>&1 || { cat node.out; return 1; }
  t1=$(date +%s%N)
  wait "$driver" || { cat driver.out; return 1; }
  kill "$silent" 2> /dev/null
  wait "$silent" 2> /dev/null
  echo "the node joined and finished in $(( (t1 - t0) / 1000000 )) ms beside a silent peer"
  [ $(( (t1 - t0) / 1000000 )) -lt 4000 ] || { echo "the silent peer held the node up"; return 1; }
}

# kill -9 of a node mid-job: the driver names it and fails, every other node exits non-zero by
# itself (not killed: 137), nothing is left.
case_kill_node() {
  mkdir -p log
  MESHPIPE_LOG_DIR=log "$LAUNCH" 3 1 -- $TRAIN --steps 1000000 > launch.out 2>&1 &
  local launch=$!
  wait_for launch.out '^step ' || { kill "$launch"; wait "$launch"; return 1; }
  local victim
  victim=$(awk '{print $2}' log/pids)
  kill -9 "$victim"
  wait "$launch"
  local rc=$?
  cat launch.out | grep -v '^step '
  cat log/exits
  awk -v v="$victim" '$2 != v && ($3 == 0 || $3 == 137) {bad = 1} END {exit bad}' log/exits ||
    { echo "a surviving node exited 0 or had to be killed"; return 1; }
  return $rc
}

# SIGSTOP of a node: its heartbeat goes silent and the liveness bound (2 s) names it; the other
# node is aborted and exits non-zero; the stopped one is killed.
case_stop_node() {
  mkdir -p log
  MESHPIPE_LOG_DIR=log "$LAUNCH" 2 1 -- $TRAIN --steps 1000000 --liveness-ms 2000 \
    > launch.out 2>&1 &
  local launch=$!
  wait_for launch.out '^step ' || { kill "$launch"; wait "$launch"; return 1; }
  local victim
  victim=$(awk '{print $2}' log/pids)
  kill -STOP "$victim"
  wait_for launch.out 'stopped answering' || { kill -9 "$victim"; wait "$launch"; return 1; }
  kill -9 "$victim"
  wait "$launch"
  local rc=$?
  cat launch.out | grep -v '^step '
  cat log/exits
  awk -v v="$victim" '$2 != v && ($3 == 0 || $3 == 137) {bad = 1} END {exit bad}' log/exits ||
    { echo "the other node exited 0 or had to be killed"; return 1; }
  return $rc
}

# A node pointed at a listener that accepts and never answers gives up within its connect
# timeout (1.5 s), saying so.
case_silent_listener() {
  /usr/bin/python3 "$PEER" listen port.txt 20 &
  local listener=$! t0 t1 rc
  for _ in $(seq 1 100); do [ -s port.txt ] && break; sleep 0.05; done
  t0=$(date +%s%N)
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$(cat port.txt)" --connect-timeout-ms 1500
  rc=$?
  t1=$(date +%s%N)
  kill "$listener"
  wait "$listener" 2> /dev/null
  echo "the node gave up after $(( (t1 - t0) / 1000000 )) ms"
  [ $(( (t1 - t0) / 1000000 )) -lt 4000 ] || { echo "the connect timeout was not honoured"; return 1; }
  return $rc
}

# A node beyond --nodes is refused with a message; the job goes on with its node.
case_extra_node() {
  "$MESHPIPE" train $TRAIN --steps 300 --listen 0 --nodes 1 > driver.out 2>&1 &
  local driver=$! port rc
  port=$(port_of driver.out) || return 1
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port" > node.out 2>&1 &
  local node=$!
  wait_for driver.out '^step ' || return 1
  "$MESHPIPE_NODE" --coordinator "127.0.0.1:$port"
  rc=$?
  wait "$node" || { cat node.out; echo "the registered node failed"; return 1; }
  wait "$driver" || { cat driver.out; echo "the job failed"; return 1; }
  grep "refused a registration" driver.out
  return $rc
}

# A node's first SIGTERM leaves the end of the job to the driver: the job completes (with its
# checkpoint, which every node writes its tiles of), and the node exits 0 with it.
case_node_sigterm() {
  mkdir -p log
  MESHPIPE_LOG_DIR=log "$LAUNCH" 2 1 -- $TRAIN --steps 150 --save ckpt > launch.out 2>&1 &
  local launch=$!
  wait_for launch.out '^step ' || { kill "$launch"; wait "$launch"; return 1; }
  kill -TERM "$(awk '{print $2}' log/pids)"
  wait "$launch"
  local rc=$?
  cat log/node1.out log/exits
  tail -n 3 launch.out
  ls ckpt > /dev/null || return 1
  return $rc
}

# SIGTERM to launch-local.sh goes to the driver alone, which ends the job; the nodes follow it
# and exit non-zero; nothing is left.
case_launch_sigterm() {
  mkdir -p log
  MESHPIPE_LOG_DIR=log "$LAUNCH" 2 1 -- $TRAIN --steps 1000000 > launch.out 2>&1 &
  local launch=$!
  wait_for launch.out '^step ' || { kill "$launch"; wait "$launch"; return 1; }
  kill -TERM "$launch"
  wait "$launch"
  local rc=$?
  cat launch.out | grep -v '^step '
  cat log/exits
  awk '$3 == 0 || $3 == 137 {bad = 1} END {exit bad}' log/exits ||
    { echo "a node exited 0 or had to be killed"; return 1; }
  [ "$rc" -ne 0 ] || { echo "the job ended with status 0"; return 0; }
  echo "launch-local.sh ended with status $rc"
  return 1
}

secret_0644() { echo "0123456789abcdef0123456789" > secret.txt && chmod 644 secret.txt; }
export -f case_job case_wrong_secret case_garbage case_silent_peer case_kill_node case_stop_node \
  case_silent_listener case_extra_node case_node_sigterm case_launch_sigterm

rb_case "a job through launch-local.sh completes" ok "step +3/3" --timeout 60 -- bash -c case_job
rb_case "a node with the wrong secret is refused" 2 "authentication failed" --timeout 60 \
  -- bash -c case_wrong_secret
rb_case "garbage and the 36-byte huge BASP header while the job waits for nodes" ok \
  "closed the connection after 0\.[0-9]+ s.*" --timeout 60 -- bash -c case_garbage
rb_case "a silent peer does not block joins" ok "joined and finished in" --timeout 60 \
  -- bash -c case_silent_peer
rb_case "kill -9 of a node mid-job" 1 "node [0-9] \(.* pid [0-9]+\) disconnected during step" \
  --timeout 60 -- bash -c case_kill_node
rb_case "SIGSTOP of a node" 1 "stopped answering \(no heartbeat for 2000 ms\)" --timeout 60 \
  -- bash -c case_stop_node
rb_case "a node pointed at a silent listener" 1 "within the connect timeout of 1500 ms" \
  --timeout 30 -- bash -c case_silent_listener
rb_case "a node beyond --nodes is refused" 1 "already has its 1 nodes.*one too many" \
  --timeout 60 -- bash -c case_extra_node
rb_case "a node without a secret" 2 "MESHPIPE_SECRET" --timeout 10 \
  -- env -u MESHPIPE_SECRET "$MESHPIPE_NODE" --coordinator 127.0.0.1:9
rb_case "a secret file others may read" 2 "chmod 600" --setup secret_0644 --timeout 10 \
  -- "$MESHPIPE" train --listen 0 --nodes 1 --secret-file secret.txt
rb_case "a node's first SIGTERM leaves the job to the driver" ok "interrupted; the driver" \
  --timeout 90 -- bash -c case_node_sigterm
rb_case "SIGTERM to launch-local.sh" 1 "interrupted: the driver ends the job" --timeout 60 \
  -- bash -c case_launch_sigterm

rb_finish
