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

test_name=e2e
# shellcheck source=slurm/test/cluster.sh
source "$(dirname "$0")/cluster.sh" "${1:-}"

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

# --- a server across nodes: published only while every worker runs -----------------------------
# Two "nodes" that are this one (the cluster has one): the head runs the simulator, the worker
# node a stand-in command, each through srun as on a real cluster.
mn_port=$(free_port)
mn_info=$tmp/multinode-info.txt
# In an allocation of its own, as a batch job would be (srun runs the script as its one task).
multinode() {
  NODES=2 NODE_HOSTS="$node $node" PORT=$mn_port CONTAINER_IMAGE="" SERVER_INFO_FILE=$mn_info \
    SERVE_CMD="$bin_dir/bench-sim --host 0.0.0.0 --port \$PORT --preset fixed --ttft-ms 5 --itl-ms 1" \
    HEALTH_TIMEOUT=60 WORKER_CMD="$1" srun --quiet --nodes=1 --ntasks=1 --cpus-per-task=2 --mem=2G bash "$repo/slurm/serve.sbatch"
}
out=$(multinode 'sleep 1; exit 3' 2>&1) && fail "a server whose worker exited was published"
# Before /health answered or after (the worker's srun may start late on a busy machine), the
# job fails and leaves no URL behind.
[[ $out == *"the worker on $node exited"* ]] || fail "multi-node: $out"
[[ ! -e $mn_info ]] || fail "a server whose worker exited is still published"
# shellcheck disable=SC2016 # $WORKER_INDEX is the worker's, expanded on its node
multinode 'echo "worker $WORKER_INDEX up"; sleep 300' > "$tmp/multinode.log" 2>&1 &
mn_pid=$!
for _ in $(seq 1 120); do
  [[ -s $mn_info ]] && break
  sleep 0.5
done
[[ -s $mn_info ]] || { cat "$tmp/multinode.log" >&2; fail "the multi-node server was never published"; }
grep -q "worker 1 up" "$tmp/multinode.log" || fail "the worker node's command did not run: $(cat "$tmp/multinode.log")"
# As scancel would: TERM to the serve script itself (`bash` or its full path first, as srun
# starts it), not to the srun that started it, whose command line names the script too: an srun
# that is signalled ends before its task has cleaned up, and the check below would race that.
pkill -TERM -f "^[^ ]*bash $repo/slurm/serve.sbatch" || fail "no serve script to stop"
wait "$mn_pid" 2>/dev/null || true
[[ ! -e $mn_info ]] || fail "the multi-node server's file outlived it"
# srun passes the stop on to the worker's step; Slurm kills what is left after KillWait (5 s).
for _ in $(seq 1 40); do
  [[ -z $(pgrep -f 'sleep 300' || true) ]] && break
  sleep 0.5
done
[[ -z $(pgrep -f 'sleep 300' || true) ]] || fail "the worker outlived the serve job"
say "across nodes: published only once healthy with every worker running; a worker that exits fails the job"

# --- submit the real jobs ----------------------------------------------------------------------
work=$tmp/work
mkdir -p "$work"
port=$(free_port)
export WORK_DIR=$work
export CONTAINER_IMAGE=""
export MODEL=sim-model TP=4 NAME=e2e PORT=$port
export SERVE_CMD="$bin_dir/bench-sim --host 0.0.0.0 --port $port --served-model-name sim-model --preset fixed --ttft-ms 5 --itl-ms 1 --slow-start-s 2 --truth-jsonl $work/truth.jsonl"
export SWEEP_BIN=$bin_dir/sweep
# --model is given again in SWEEP_ARGS: a flag there wins over the environment's.
export SWEEP_ARGS="--model sim-model --input-lens 64,128 --concurrency 1,2 --output-len 8 --prompts-per-concurrency 2 --warmups-per-concurrency 1 --tokenizer $repo/testdata/tokenizers/deepseek-v4 --poll-interval 200ms --wait-timeout 120s --disable-tqdm"
submitted=$("$repo/slurm/submit.sh")
echo "$submitted"
mapfile -t ids < "$work/.inferperf-jobs"
serve_id=${ids[0]}
sweep_id=${ids[1]}


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
    # The serve job's topology (TP=4: 4 GPUs, one node) is in every result.
    gpus=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["deployment"]["gpus"])' "$f")
    [[ $gpus -eq 4 ]] || fail "$f: deployment.gpus $gpus"
  done
done
[[ -s $work/results/sweep_summary.csv ]] || fail "no sweep summary"
grep -q "server healthy at $url" "$sweep_log" || fail "sweep log does not show the server it used"
grep -q "healthy; wrote $url" "$work/logs/serve-$serve_id.out" || fail "serve log lacks the advertisement"
say "4 result files, summary and logs present"

# --- two clients, as two srun tasks of one sweep job, merged into one result per cell ----------
two=$work/results-2clients
sweep2_id=$(RESULTS_DIR=$two SERVER_INFO_FILE=$work/server_info.txt CLIENTS=2 \
  SWEEP_ARGS="--model sim-model --input-lens 64 --concurrency 2,4 --output-len 8 --prompts-per-concurrency 2 --warmups-per-concurrency 1 --tokenizer $repo/testdata/tokenizers/deepseek-v4 --poll-interval 200ms --wait-timeout 120s --disable-tqdm" \
  sbatch --parsable --chdir="$work" --ntasks=2 --cpus-per-task=2 --mem=4G --output="$work/logs/sweep2-%j.out" "$repo/slurm/sweep.sbatch")
for _ in $(seq 1 240); do
  s=$(state "$sweep2_id")
  [[ $s =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)$ ]] && break
  sleep 0.5
done
[[ $s == COMPLETED ]] || { cat "$work/logs/sweep2-$sweep2_id.out" >&2; fail "the two-client sweep job ended $s"; }
grep -q "^1: " "$work/logs/sweep2-$sweep2_id.out" || fail "no line of client 1 in the log"
python3 - "$two" "$work/truth.jsonl" <<'PY' || fail "the merged two-client results"
import collections, json, statistics, sys
results, truth_path = sys.argv[1], sys.argv[2]
# The simulator's record of each request id, in order of arrival: each cell numbers from 0.
arrivals = collections.defaultdict(list)
for line in open(truth_path):
    t = json.loads(line)
    if t["request_id"]:
        arrivals[t["request_id"]].append(t)
for a in arrivals.values():
    a.sort(key=lambda t: t["arrival_s"])
seen = collections.Counter()
for conc in (2, 4):
    base = f"{results}/e2e_tp4_isl64_osl8_conc{conc}"
    v = json.load(open(base + ".json"))
    assert v["completed"] == 2 * conc, v["completed"]
    assert v["clients"]["count"] == 2, v["clients"]
    assert [c["requests"] for c in v["clients"]["each"]] == [conc, conc], v["clients"]
    lines = [json.loads(l) for l in open(base + ".requests.jsonl")]
    assert len(lines) == 2 * conc
    # The merged figures are the union's.
    assert abs(v["median_ttft_ms"] - statistics.median(l["ttft_ms"] for l in lines)) < 1e-6
    assert v["total_output_tokens"] == sum(l["output_tokens"] for l in lines)
    assert {l["request_id"].split("-")[1] for l in lines} == {"c0", "c1"}
    # Request by request, the simulator's truth.
    for l in lines:
        t = arrivals[l["request_id"]][seen[l["request_id"]]]
        seen[l["request_id"]] += 1
        assert len(t["event_sent_s"]) == l["events"], l["request_id"]
        server_ttft_ms = (t["event_sent_s"][0] - t["arrival_s"]) * 1e3
        assert l["ttft_ms"] + 0.02 >= server_ttft_ms, (l["request_id"], l["ttft_ms"], server_ttft_ms)
PY
say "two clients as srun tasks: each cell merged, its figures the union's, each request the simulator's"

# --- cancel the server: the file must go -------------------------------------------------------
[[ $(state "$serve_id") == RUNNING ]] || fail "serve job not running before cancel"
(cd "$work" && "$repo/slurm/cancel.sh")
for _ in $(seq 1 60); do
  [[ ! -e $info ]] && [[ $(state "$serve_id") != RUNNING ]] && break
  sleep 0.5
done
[[ ! -e $info ]] || fail "server_info.txt still there after the server job was cancelled"
[[ ! -e $info.topology.json ]] || fail "the topology file outlived the server job"
say "server job cancelled; server_info.txt removed"
say "PASS"
