#!/usr/bin/env bash
# Submit the serve job and the sweep job; the sweep starts once the server job has started and
# then waits for the server itself. Prints both job ids and where logs and results go, and records
# the ids for slurm/cancel.sh.
#
# Settings, from the environment (each job's own settings pass through: see the .sbatch headers):
#   PARTITION, ACCOUNT        for both jobs                       [cluster defaults]
#   SERVE_PARTITION           for the serve job                   [$PARTITION]
#   SWEEP_PARTITION           for the sweep job                   [$PARTITION]
#   SERVE_SBATCH_ARGS         extra sbatch flags for serve (e.g. "--gres=gpu:8 --time=4:00:00") []
#   SWEEP_SBATCH_ARGS         extra sbatch flags for the sweep    []
#   WORK_DIR                  where server_info.txt, results/ and logs/ go [$PWD]
#   SERVER_INFO_FILE          [$WORK_DIR/server_info.txt]
#   RESULTS_DIR               [$WORK_DIR/results]
#   LOG_DIR                   [$WORK_DIR/logs]
#   JOBS_FILE                 where the ids are recorded           [$WORK_DIR/.inferperf-jobs]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
WORK_DIR=${WORK_DIR:-$PWD}
export SERVER_INFO_FILE=${SERVER_INFO_FILE:-$WORK_DIR/server_info.txt}
export RESULTS_DIR=${RESULTS_DIR:-$WORK_DIR/results}
LOG_DIR=${LOG_DIR:-$WORK_DIR/logs}
JOBS_FILE=${JOBS_FILE:-$WORK_DIR/.inferperf-jobs}
mkdir -p "$LOG_DIR" "$RESULTS_DIR"

common=(--parsable --chdir="$WORK_DIR")
[[ -n ${ACCOUNT:-} ]] && common+=(--account="$ACCOUNT")
serve_part=${SERVE_PARTITION:-${PARTITION:-}}
sweep_part=${SWEEP_PARTITION:-${PARTITION:-}}

serve=("${common[@]}" --output="$LOG_DIR/serve-%j.out")
[[ -n $serve_part ]] && serve+=(--partition="$serve_part")
# Extra flags are a flag list: split on whitespace on purpose.
# shellcheck disable=SC2206
serve+=(${SERVE_SBATCH_ARGS:-})

if [[ -e $SERVER_INFO_FILE ]]; then
  echo "removing a stale $SERVER_INFO_FILE left by an earlier server"
  rm -f "$SERVER_INFO_FILE"
fi
serve_id=$(sbatch "${serve[@]}" "$here/serve.sbatch")
serve_id=${serve_id%%;*}

sweep=("${common[@]}" --output="$LOG_DIR/sweep-%j.out" --dependency="after:$serve_id")
[[ -n $sweep_part ]] && sweep+=(--partition="$sweep_part")
# shellcheck disable=SC2206
sweep+=(${SWEEP_SBATCH_ARGS:-})
sweep_id=$(sbatch "${sweep[@]}" "$here/sweep.sbatch")
sweep_id=${sweep_id%%;*}

printf '%s\n%s\n' "$serve_id" "$sweep_id" > "$JOBS_FILE"
cat <<MSG
serve job: $serve_id  (log: $LOG_DIR/serve-$serve_id.out)
sweep job: $sweep_id  (log: $LOG_DIR/sweep-$sweep_id.out, starts after the serve job starts)
server URL will appear in: $SERVER_INFO_FILE
results: $RESULTS_DIR
cancel both: slurm/cancel.sh   (or: scancel $serve_id $sweep_id)
MSG
