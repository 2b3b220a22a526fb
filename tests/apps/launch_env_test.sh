#!/usr/bin/env bash
# Launch conventions on loopback (actors/launch_env.h): processes started as srun or torchrun
# would start them, with the launchers' variables faked. `meshpipe-node --driver -- <train
# options>` under torchrun's variables (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) and under
# Slurm's (SLURM_PROCID/SLURM_NTASKS/SLURM_JOB_NODELIST, MESHPIPE_PORT): rank 0 drives, rank 1
# joins, and the losses equal one process's; `meshpipe train --launcher torchrun` on both ranks
# does the same; nodes without --driver join a driver started on
# its own; a rank started before the driver listens waits for it; wrong variables are errors
# naming them. Usage: launch_env_test.sh BIN_DIR SCRATCH_DIR
set -uo pipefail
bin="$1"; dir="$2"
rm -rf "$dir" && mkdir -p "$dir"
export UCX_NET_DEVICES=lo
MESHPIPE_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export MESHPIPE_SECRET
fail=0
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
losses() { grep '^step ' "$1" | awk '{print $2, $4}'; }
train=(--model gpt-tiny --steps 4)
"$bin/meshpipe" train "${train[@]}" > "$dir/one.log" 2>&1
one=$(losses "$dir/one.log")

# Two ranks of one command line: ENV0 and ENV1 are the variables of rank 0 and rank 1.
run_pair() {  # name, "vars of rank 0", "vars of rank 1", program, args...
  local name="$1" env0="$2" env1="$3" program="$4"; shift 4
  # Rank 1 first: it must wait for rank 0's driver to listen.
  env $env1 timeout 120 "$bin/$program" "$@" > "$dir/$name.1.log" 2>&1 &
  local pid=$!
  sleep 1
  env $env0 timeout 120 "$bin/$program" "$@" > "$dir/$name.0.log" 2>&1
  local rc0=$?
  wait $pid
  local rc1=$?
  if [ $rc0 -ne 0 ] || [ $rc1 -ne 0 ]; then
    echo "FAIL $name: exits $rc0 (rank 0) and $rc1 (rank 1)"; tail -3 "$dir/$name.0.log" "$dir/$name.1.log"
    fail=1
  elif [ "$(losses "$dir/$name.0.log")" != "$one" ]; then
    echo "FAIL $name: losses $(losses "$dir/$name.0.log" | tr '\n' ' ') differ from one process's $one"
    fail=1
  else
    echo "ok $name: rank 0 drove, rank 1 joined; losses equal one process's ($(losses "$dir/$name.0.log" | tail -1))"
  fi
}

p=$(free_port)
common="WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p"
run_pair torchrun "RANK=0 $common" "RANK=1 $common" meshpipe-node --devices 2 --driver -- \
  "${train[@]}"
grep -q "torchrun rank 1 of 2, coordinator 127.0.0.1:$p" "$dir/torchrun.1.log" ||
  { echo "FAIL: rank 1 did not report its launcher"; fail=1; }

p=$(free_port)
common="SLURM_NTASKS=2 SLURM_LOCALID=0 SLURM_JOB_NODELIST=localhost MESHPIPE_PORT=$p"
run_pair slurm "SLURM_PROCID=0 $common" "SLURM_PROCID=1 $common" meshpipe-node --devices 2 \
  --driver -- "${train[@]}"

# `meshpipe train --launcher` on every rank (torchrun --no-python): rank 1 becomes a node.
p=$(free_port)
common="WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p"
run_pair train-launcher "RANK=0 $common" "RANK=1 $common" meshpipe train --launcher torchrun \
  --local-devices 2 "${train[@]}"

# A driver of its own, and two ranks that both join it.
p=$(free_port)
"$bin/meshpipe" train "${train[@]}" --listen "$p" --nodes 2 > "$dir/own.log" 2>&1 &
driver=$!
common="WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p"
env RANK=0 $common timeout 120 "$bin/meshpipe-node" --devices 2 > "$dir/own.0.log" 2>&1 &
n0=$!
env RANK=1 $common timeout 120 "$bin/meshpipe-node" --devices 2 > "$dir/own.1.log" 2>&1
rc1=$?
wait $n0; rc0=$?
wait $driver; rcd=$?
if [ $rcd -ne 0 ] || [ $rc0 -ne 0 ] || [ $rc1 -ne 0 ] || [ "$(losses "$dir/own.log")" != "$one" ]; then
  echo "FAIL separate driver: exits $rcd $rc0 $rc1"; tail -3 "$dir/own.log"; fail=1
else
  echo "ok separate driver: both ranks joined it; losses equal one process's"
fi

# Wrong variables: errors naming them, before anything starts.
expect_error() {  # pattern, env..., -- node args
  local pattern="$1"; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  local out
  if out=$(env "${vars[@]}" timeout 30 "$bin/meshpipe-node" "$@" 2>&1) ||
     ! echo "$out" | grep -q -- "$pattern"; then
    echo "FAIL: expected '$pattern': $out"; fail=1
  else
    echo "ok: $(echo "$out" | head -1)"
  fi
}
expect_error "one process per machine" RANK=0 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 \
  MASTER_PORT=1 -- --driver -- "${train[@]}"
expect_error "export MASTER_PORT" RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 -- --driver
expect_error "RANK 2 is not below WORLD_SIZE 2" RANK=2 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=1 --
expect_error "drop --coordinator" RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 \
  -- --launcher torchrun --coordinator 127.0.0.1:2
# --coordinator by hand inside an allocation: the launcher's variables are ignored.
expect_error "cannot reach the coordinator at 127.0.0.1:2" SLURM_PROCID=0 SLURM_NTASKS=1 \
  -- --coordinator 127.0.0.1:2 --connect-timeout-ms 600
expect_error "is given by the launcher" RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 \
  -- --driver -- --model gpt-tiny --listen 5
expect_error "host list 'gpu\[' is malformed" SLURM_PROCID=0 SLURM_NTASKS=2 \
  SLURM_JOB_NODELIST='gpu[' MESHPIPE_PORT=1 -- --driver
exit $fail
