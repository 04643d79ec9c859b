#!/usr/bin/env bash
# End-to-end test of the Slurm workflow on a real one-node Slurm cluster started here.
#
#   slurm/test/e2e.sh BIN_DIR
#
# BIN_DIR holds the bench-sim and sweep binaries. The script installs slurm-wlm, munge and curl
# from Debian's packages when they are missing (as root), starts a private munged and a one-node
# cluster (4 fake GPUs) in a temporary folder, submits the real serve.sbatch (with the engine
# simulator as SERVE_CMD) and sweep.sbatch through slurm/submit.sh, waits for the sweep, checks the
# result files, the server-info file's lifecycle and the job logs, cancels the server job with
# slurm/cancel.sh, and stops the cluster. Exit 0 when every check passes.
set -euo pipefail

bin_dir=$(cd "${1:?usage: e2e.sh BIN_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
for b in bench-sim sweep; do
  [[ -x $bin_dir/$b ]] || { echo "e2e: no $b in $bin_dir" >&2; exit 2; }
done

say() { printf 'e2e: %s\n' "$*"; }
fail() { printf 'e2e: FAIL: %s\n' "$*" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v curl >/dev/null; then
  [[ $(id -u) -eq 0 ]] || fail "slurm-wlm, munge and curl are needed; install them or run as root"
  say "installing slurm-wlm munge curl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurm-wlm munge curl >/dev/null
fi

tmp=$(mktemp -d /tmp/inferperf-slurm.XXXXXX)
chmod 755 "$tmp"
pids=()
# Called by the EXIT trap.
# shellcheck disable=SC2317
stop_cluster() {
  set +e
  if [[ -n ${SLURM_CONF:-} ]]; then
    scancel --quiet --user="$(id -un)" 2>/dev/null
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -f $tmp/slurmctld.pid ]] && kill "$(cat "$tmp/slurmctld.pid")" 2>/dev/null
  [[ -f $tmp/slurmd.pid ]] && kill "$(cat "$tmp/slurmd.pid")" 2>/dev/null
  [[ -f $tmp/munged.pid ]] && kill "$(cat "$tmp/munged.pid")" 2>/dev/null
  sleep 1
  if [[ ${KEEP_TMP:-0} == 1 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap stop_cluster EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- munge, private to this test -------------------------------------------------------------
mkdir -p "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
munged --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
  --pid-file="$tmp/munged.pid" --log-file="$tmp/munged.log" --seed-file="$tmp/munge/seed"

# --- a one-node cluster ----------------------------------------------------------------------
node=$(hostname -s)
ctld_port=$(free_port)
slurmd_port=$(free_port)
mkdir -p "$tmp/state" "$tmp/spool"
cat > "$tmp/slurm.conf" <<CONF
ClusterName=inferperf-e2e
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=200000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# Four fake GPUs: gres/gpu needs device files, and any file will do for scheduling.
touch "$tmp"/fake-gpu{0,1,2,3}
printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/fake-gpu[0-3]\n' "$node" "$tmp" > "$tmp/gres.conf"
export SLURM_CONF=$tmp/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then break; fi
  sleep 1
done
sinfo -h -o '%T' | grep -qE '^(idle|mixed)' || { tail -n 20 "$tmp/slurmctld.log" "$tmp/slurmd.log" >&2; fail "the node never became idle"; }
say "cluster up: $(sinfo -h -o '%N %T %G')"

# --- serve.sbatch refuses what would publish the wrong server ------------------------------------
guard_port=$(free_port)
out=$(PORT=$guard_port CONTAINER_IMAGE="" SERVER_INFO_FILE=$tmp/guard-info.txt \
  SERVE_CMD="$bin_dir/bench-sim --port 1" bash "$repo/slurm/serve.sbatch" 2>&1) &&
  fail "serve.sbatch ran a SERVE_CMD that does not listen on \$PORT"
[[ $out == *"does not listen on \$PORT"* ]] || fail "serve.sbatch: $out"
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(); time.sleep(30)' "$guard_port" &
squatter=$!
sleep 0.5
out=$(PORT=$guard_port CONTAINER_IMAGE="" SERVER_INFO_FILE=$tmp/guard-info.txt \
  SERVE_CMD="$bin_dir/bench-sim --port \$PORT" bash "$repo/slurm/serve.sbatch" 2>&1) &&
  fail "serve.sbatch started on a port another process listens on"
kill "$squatter" 2>/dev/null || true
[[ $out == *"already in use"* ]] || fail "serve.sbatch: $out"
[[ ! -e $tmp/guard-info.txt ]] || fail "a refused serve job published a URL"
say "serve.sbatch refuses a SERVE_CMD off \$PORT and a port already taken"

# --- submit the real jobs ----------------------------------------------------------------------
work=$tmp/work
mkdir -p "$work"
port=$(free_port)
export WORK_DIR=$work
export CONTAINER_IMAGE=""
export MODEL=sim-model TP=4 NAME=e2e PORT=$port
export SERVE_CMD="$bin_dir/bench-sim --host 0.0.0.0 --port $port --served-model-name sim-model --preset fixed --ttft-ms 5 --itl-ms 1 --slow-start-s 2"
export SWEEP_BIN=$bin_dir/sweep
# --model is given again in SWEEP_ARGS: a flag there wins over the environment's.
export SWEEP_ARGS="--model sim-model --input-lens 64,128 --concurrency 1,2 --output-len 8 --prompts-per-concurrency 2 --warmups-per-concurrency 1 --tokenizer $repo/testdata/tokenizers/deepseek-v4 --poll-interval 200ms --wait-timeout 120s --disable-tqdm"
submitted=$("$repo/slurm/submit.sh")
echo "$submitted"
mapfile -t ids < "$work/.inferperf-jobs"
serve_id=${ids[0]}
sweep_id=${ids[1]}

state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }

# The server-info file appears only once /health answers.
info=$work/server_info.txt
for _ in $(seq 1 120); do
  [[ -s $info ]] && break
  [[ $(state "$serve_id") =~ ^(FAILED|CANCELLED|COMPLETED|TIMEOUT)$ ]] && { cat "$work/logs/serve-$serve_id.out" >&2; fail "serve job ended early"; }
  sleep 0.5
done
[[ -s $info ]] || fail "server_info.txt never appeared"
url=$(head -n1 "$info")
[[ $url =~ ^http://[^:]+:$port$ ]] || fail "server_info.txt holds '$url'"
curl -sf "$url/health" >/dev/null || fail "$url/health does not answer"
say "server advertised at $url"

for _ in $(seq 1 240); do
  s=$(state "$sweep_id")
  [[ $s =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)$ ]] && break
  sleep 0.5
done
say "sweep job $sweep_id ended: $s"
sweep_log=$work/logs/sweep-$sweep_id.out
[[ $s == COMPLETED ]] || { cat "$sweep_log" >&2; fail "sweep job state $s"; }

# --- results -----------------------------------------------------------------------------------
for isl in 64 128; do
  for conc in 1 2; do
    f=$work/results/e2e_tp4_isl${isl}_osl8_conc${conc}.json
    [[ -s $f ]] || fail "missing $f"
    completed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$f")
    [[ $completed -eq $((conc * 2)) ]] || fail "$f: completed $completed"
  done
done
[[ -s $work/results/sweep_summary.csv ]] || fail "no sweep summary"
grep -q "server healthy at $url" "$sweep_log" || fail "sweep log does not show the server it used"
grep -q "healthy; wrote $url" "$work/logs/serve-$serve_id.out" || fail "serve log lacks the advertisement"
say "4 result files, summary and logs present"

# --- cancel the server: the file must go -------------------------------------------------------
[[ $(state "$serve_id") == RUNNING ]] || fail "serve job not running before cancel"
(cd "$work" && "$repo/slurm/cancel.sh")
for _ in $(seq 1 60); do
  [[ ! -e $info ]] && [[ $(state "$serve_id") != RUNNING ]] && break
  sleep 0.5
done
[[ ! -e $info ]] || fail "server_info.txt still there after the server job was cancelled"
say "server job cancelled; server_info.txt removed"
say "PASS"
