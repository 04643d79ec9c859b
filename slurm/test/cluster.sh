#!/usr/bin/env bash
# A real one-node Slurm cluster (4 fake GPUs, 8 CPUs) in a temporary folder, for the tests that
# run the Slurm scripts. Sourced, not run:
#
#   source slurm/test/cluster.sh BIN_DIR
#
# Installs slurm-wlm, munge and curl from Debian's packages when they are missing (as root),
# starts a private munged, slurmctld and slurmd, and waits for the node to be idle. Defines
# bin_dir, repo, tmp (kept with KEEP_TMP=1), SLURM_CONF (exported), say, fail, free_port and
# state JOB_ID; an EXIT trap cancels every job and stops the cluster.
# Callers set `test_name` first: it prefixes every line.

bin_dir=$(cd "${1:?usage: source cluster.sh BIN_DIR}" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this one
repo=$(cd "$(dirname "$0")/../.." && pwd)
for b in bench-sim sweep; do
  [[ -x $bin_dir/$b ]] || { echo "${test_name:-slurm}: no $b in $bin_dir" >&2; exit 2; }
done

say() { printf '%s: %s\n' "${test_name:-slurm}" "$*"; }
fail() { printf '%s: FAIL: %s\n' "${test_name:-slurm}" "$*" >&2; exit 1; }

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

state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
