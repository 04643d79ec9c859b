#!/usr/bin/env bash
# Cancel the jobs the last slurm/submit.sh started (ids in $JOBS_FILE).
set -euo pipefail
WORK_DIR=${WORK_DIR:-$PWD}
JOBS_FILE=${JOBS_FILE:-$WORK_DIR/.inferperf-jobs}
if [[ ! -s $JOBS_FILE ]]; then
  echo "no job ids in $JOBS_FILE: nothing to cancel" >&2
  exit 1
fi
mapfile -t ids < "$JOBS_FILE"
scancel "${ids[@]}"
echo "cancelled: ${ids[*]}"
rm -f "$JOBS_FILE"
