#!/usr/bin/env bash
# Starts a meshpipe job on this machine: a driver (`meshpipe train --listen 0 --nodes K ...`)
# and K `meshpipe-node` processes with N virtual CPU devices each, all on loopback. Prints the
# driver's output; the nodes' output and exit statuses (exits: "nodeK PID STATUS") go to
# $MESHPIPE_LOG_DIR (default: a temporary directory).
# Exits with the driver's status once every process has ended; no process is left behind.
#
# The job's secret: $MESHPIPE_SECRET when set, else a new random one; every process reads it
# from the environment, never from its command line (which `ps` shows to everyone).
# Interrupting this script (Ctrl-C, SIGTERM) hands the signal to the driver alone, which ends the
# job (it finishes the step, saves with --save, and exits non-zero; the nodes follow it); a
# second interrupt ends every process at once.
#
#   scripts/launch-local.sh K N -- --model gpt-tiny --steps 20 [other train options]
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NODES DEVICES_PER_NODE -- <meshpipe train options>" >&2
  exit 2
fi
nodes=$1
devices=$2
shift 2
[ "${1:-}" = "--" ] && shift
bin_dir=${MESHPIPE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/bin}
log=${MESHPIPE_LOG_DIR:-$(mktemp -d)}
mkdir -p "$log"
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
for exe in meshpipe meshpipe-node; do
  [ -x "$bin_dir/$exe" ] || { echo "$0: $bin_dir/$exe not found (build first, or set MESHPIPE_BIN)" >&2; exit 2; }
done
if [ -z "${MESHPIPE_SECRET:-}" ]; then
  MESHPIPE_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
fi
export MESHPIPE_SECRET

# Each node stands for a host of its own: with $MESHPIPE_PIN unset or 1 (and taskset at hand) node
# k is pinned to its share of this process's cores (one core each, round robin, when there are
# fewer cores than nodes), so that a node's BLAS and kernel threads (its cores / its devices) do
# not compete with the other nodes' for cores they count as their own. MESHPIPE_PIN=0: no pinning.
cpus=()
if [ "${MESHPIPE_PIN:-1}" != 0 ] && command -v taskset > /dev/null; then
  allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
  IFS=, read -ra ranges <<< "$allowed"
  for r in "${ranges[@]}"; do
    if [[ $r == *-* ]]; then
      for c in $(seq "${r%-*}" "${r#*-}"); do cpus+=("$c"); done
    elif [ -n "$r" ]; then
      cpus+=("$r")
    fi
  done
fi
# The cores of node k (1-based), comma-separated; empty: no pinning.
cores_of() {
  local n=${#cpus[@]} k=$1
  [ "$n" -eq 0 ] && return
  if [ "$n" -lt "$nodes" ]; then
    echo "${cpus[$(((k - 1) % n))]}"
    return
  fi
  local share=$((n / nodes)) out="" i
  for i in $(seq $(((k - 1) * share)) $((k * share - 1))); do out+="${out:+,}${cpus[$i]}"; done
  echo "$out"
}

# Job control: every process gets a process group of its own, so a Ctrl-C at the terminal
# reaches this script only, and the driver hears of it once (from here), not twice.
set -m
"$bin_dir/meshpipe" train --listen 0 --nodes "$nodes" "$@" > "$log/driver.out" 2>&1 &
driver=$!
pids=()
interrupts=0
interrupt() {
  interrupts=$((interrupts + 1))
  if [ "$interrupts" -eq 1 ]; then
    echo "$0: interrupted: the driver ends the job (interrupt again to stop every process now)" >&2
    kill -TERM "$driver" 2> /dev/null
  else
    for p in "${pids[@]}" "$driver"; do kill -TERM "$p" 2> /dev/null; done
  fi
}
trap interrupt INT TERM

port=""
for _ in $(seq 1 200); do
  port=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log/driver.out" 2> /dev/null | head -1 | sed 's/.*://')
  [ -n "$port" ] && break
  kill -0 "$driver" 2> /dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  cat "$log/driver.out"
  wait "$driver"
  exit $?
fi
for k in $(seq 1 "$nodes"); do
  pin=()
  set_of=$(cores_of "$k")
  [ -n "$set_of" ] && pin=(taskset -c "$set_of")
  "${pin[@]}" "$bin_dir/meshpipe-node" --coordinator "127.0.0.1:$port" --devices "$devices" \
    > "$log/node$k.out" 2>&1 &
  pids+=($!)
done
echo "nodes: ${pids[*]}" > "$log/pids"
tail -n +1 -f "$log/driver.out" --pid="$driver" &
tailer=$!
# `wait` returns early when a trapped signal arrives: wait until the driver has really ended.
while true; do
  wait "$driver"
  rc=$?
  kill -0 "$driver" 2> /dev/null || break
done
wait "$tailer" 2> /dev/null
# The nodes exit when the driver ends the job (or loses it); make sure of it.
for _ in $(seq 1 100); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
  [ "$alive" -eq 0 ] && break
  sleep 0.1
done
for p in "${pids[@]}"; do
  if kill -0 "$p" 2> /dev/null; then
    echo "$0: node process $p did not exit; killing it" >&2
    kill -9 "$p" 2> /dev/null
    rc=1
  fi
done
# Every node's exit status (137: killed), for whoever looks into the log.
: > "$log/exits"
for k in $(seq 1 "$nodes"); do
  p=${pids[$((k - 1))]}
  wait "$p" 2> /dev/null
  echo "node$k $p $?" >> "$log/exits"
done
for k in $(seq 1 "$nodes"); do
  if grep -q "error" "$log/node$k.out"; then sed "s/^/node$k: /" "$log/node$k.out" >&2; fi
done
exit $rc
