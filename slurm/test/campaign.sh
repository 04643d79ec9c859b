#!/usr/bin/env bash
# End-to-end test of a campaign on a real one-node Slurm cluster started here.
#
#   slurm/test/campaign.sh BIN_DIR
#
# BIN_DIR holds the bench-sim, sweep and plot binaries. Two configurations stand in for TP2 and
# TP4 servers (the engine simulator's minimax-m2-tp4 preset at --tp 2 and 4, through serve.sbatch's
# SERVE_CMD), at most one server at a time. Checks: the dry run prints every sbatch command and
# submits nothing; the second server waits for the first to end; every result file carries its
# configuration and topology, per-GPU figures divided by its GPUs; each sweep stops its server;
# the campaign summary says finished; submitting again submits nothing; --cancel stops a
# campaign's jobs; a server that dies stops its sweep; plot --kind compare draws the campaign. Exit 0 when every check passes.
set -euo pipefail

test_name=campaign
# shellcheck source=slurm/test/cluster.sh
source "$(dirname "$0")/cluster.sh" "${1:-}"
[[ -x $bin_dir/plot ]] || fail "no plot in $bin_dir"

work=$tmp/work
mkdir -p "$work"
cd "$work"

# Two free ports in a row: each configuration takes the next port.
port=""
for _ in $(seq 1 20); do
  p=$(free_port)
  if python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' $((p + 1)) 2>/dev/null; then
    port=$p
    break
  fi
done
[[ -n $port ]] || fail "no two free ports in a row"

tok=$repo/testdata/tokenizers/deepseek-v4
sim="$bin_dir/bench-sim --host 0.0.0.0 --port \$PORT --served-model-name sim-model --preset minimax-m2-tp4 --tp \$TP --time-scale 5 --tokenizer $tok"
cat > campaign.toml <<TOML
name = "e2e"
max_servers = 1
container_image = ""
scripts = "$repo/slurm"
port = $port

[slurm]
sweep_bin = "$bin_dir/sweep"

[sweep]
input_lens = [64, 128]
concurrency = [1, 2]
output_len = 8
prompts_per_concurrency = 2
warmups_per_concurrency = 1
args = ["--tokenizer", "$tok", "--poll-interval", "200ms", "--wait-timeout", "120s", "--disable-tqdm"]

[[config]]
name = "tp2"
served_model_name = "sim-model"
tp = 2
serve_cmd = "$sim"

[[config]]
name = "tp4"
served_model_name = "sim-model"
tp = 4
serve_cmd = "$sim"
sweep = { concurrency = [2, 4] }
TOML

jobs_of_campaign() { squeue --noheader --me --format='%j %T %r' | grep '^inferperf-e2e-' || true; }

# --- the dry run ---------------------------------------------------------------------------------
"$bin_dir/sweep" --campaign campaign.toml --dry-run > dry.txt 2> dry.err
[[ $(wc -l < dry.txt) -eq 4 ]] || { cat dry.txt dry.err >&2; fail "the dry run printed $(wc -l < dry.txt) lines, not 4"; }
# shellcheck disable=SC2016 # the lines hold a literal $(...) and ${...}
grep -q '^serve_tp2=$(env .* sbatch --parsable .*--gres=gpu:2 .*serve.sbatch)$' dry.txt || fail "no serve line for tp2: $(cat dry.txt)"
# shellcheck disable=SC2016 # the lines hold a literal $(...) and ${...}
grep -q '^serve_tp4=$(env .* sbatch .*--dependency=afterany:${serve_tp2} .*serve.sbatch)$' dry.txt ||
  fail "tp4's server does not wait for tp2's: $(cat dry.txt)"
# shellcheck disable=SC2016 # the lines hold a literal $(...) and ${...}
grep -q '^sweep_tp4=$(env .*SERVE_JOB_ID=${serve_tp4} .*--dependency=after:${serve_tp4} .*sweep.sbatch)$' dry.txt ||
  fail "tp4's sweep does not follow its server: $(cat dry.txt)"
[[ -z $(jobs_of_campaign) ]] || fail "the dry run submitted jobs"
[[ ! -e results ]] || fail "the dry run wrote files"
say "the dry run prints the 4 sbatch commands and submits nothing"

# --- submit, and watch the cap hold --------------------------------------------------------------
"$bin_dir/sweep" --campaign campaign.toml 2> submit.err || { cat submit.err >&2; fail "submitting failed"; }
[[ -s results/e2e/campaign-jobs.json ]] || fail "no job record"
saw_waiting=0
for _ in $(seq 1 600); do
  jobs=$(jobs_of_campaign)
  if [[ $jobs == *"inferperf-e2e-tp2-serve RUNNING"* && $jobs == *"inferperf-e2e-tp4-serve PENDING Dependency"* ]]; then
    saw_waiting=1
  fi
  running_serves=$(grep -c -- '-serve RUNNING' <<< "$jobs" || true)
  [[ $running_serves -le 1 ]] || fail "two servers ran at once with max_servers = 1: $jobs"
  [[ -z $jobs ]] && break
  sleep 0.5
done
[[ -z $(jobs_of_campaign) ]] || fail "the campaign's jobs did not end: $(jobs_of_campaign)"
[[ $saw_waiting == 1 ]] || fail "never saw tp4's server wait for tp2's to end"
say "the jobs ran, one server at a time"

# --- what landed ---------------------------------------------------------------------------------
check_config() {
  local config=$1 gpus=$2
  shift 2
  local dir=results/e2e/$config
  for isl in 64 128; do
    for conc in "$@"; do
      local f=$dir/${config}_tp${gpus}_isl${isl}_osl8_conc${conc}.json
      [[ -s $f ]] || { tail -n 30 "$dir"/logs/*.out >&2; fail "missing $f"; }
      python3 - "$f" "$config" "$gpus" "$conc" <<'PY' || fail "$f: wrong deployment or per-GPU figures"
import json, sys
path, config, gpus, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v = json.load(open(path))
d = v["config"]["deployment"]
assert d == {"name": config, "gpus": gpus, "nodes": 1, "pp": 1, "dp": 1, "expert_parallel": False}, d
assert v["completed"] == 2 * conc, v["completed"]
assert abs(v["per_gpu"]["output_throughput"] * gpus - v["output_throughput"]) < 1e-6 * v["output_throughput"]
PY
    done
  done
  grep -q "stopping the serve job" "$dir"/logs/sweep-*.out || fail "$config's sweep did not stop its server"
  [[ ! -e $dir/server_info.txt ]] || fail "$config's server-info file outlived its server"
}
check_config tp2 2 1 2
check_config tp4 4 2 4
for config in tp2 tp4; do
  grep -q "^$config,finished,4,4," results/e2e/campaign.csv || fail "campaign.csv: $(cat results/e2e/campaign.csv)"
done
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [c["status"] for c in d["configs"]] == ["finished", "finished"], d' \
  results/e2e/campaign.json || fail "campaign.json: $(cat results/e2e/campaign.json)"
say "8 result files tagged with their configuration and GPUs; the summary says finished"

# --- submitting again submits nothing ------------------------------------------------------------
"$bin_dir/sweep" --campaign campaign.toml 2> again.err || { cat again.err >&2; fail "resubmitting failed"; }
grep -q "tp2: finished (4 cells): not submitted" again.err || fail "resubmit: $(cat again.err)"
grep -q "tp4: finished (4 cells): not submitted" again.err || fail "resubmit: $(cat again.err)"
[[ -z $(jobs_of_campaign) ]] || fail "resubmitting a finished campaign submitted jobs"
say "submitting again skips the finished configurations"

# --- cancel --------------------------------------------------------------------------------------
# A campaign whose server never becomes healthy: its jobs wait until cancelled.
sed -e 's/^name = "e2e"/name = "e2e-cancel"/' -e "s|^serve_cmd = .*|serve_cmd = \"sleep 300 # --port \$PORT\"|" \
  campaign.toml > cancel.toml
"$bin_dir/sweep" --campaign cancel.toml 2> cancel-submit.err || { cat cancel-submit.err >&2; fail "submitting failed"; }
[[ -n $(squeue --noheader --me --name=inferperf-e2e-cancel-tp2-serve --format=%i) ]] || fail "nothing submitted to cancel"
"$bin_dir/sweep" --campaign cancel.toml --cancel > cancel.out 2> cancel.err || { cat cancel.err >&2; fail "--cancel failed"; }
grep -q "^cancelled: " cancel.err || fail "--cancel: $(cat cancel.err)"
for _ in $(seq 1 60); do
  [[ -z $(squeue --noheader --me --format=%j | grep '^inferperf-e2e-cancel-' || true) ]] && break
  sleep 0.5
done
[[ -z $(squeue --noheader --me --format=%j | grep '^inferperf-e2e-cancel-' || true) ]] || fail "jobs left after --cancel"
grep -q "^tp2 .*ended unfinished" cancel.out || fail "status after --cancel: $(cat cancel.out)"
say "--cancel stops every job of the campaign"

# --- a server that dies stops its sweep ----------------------------------------------------------
sed -e 's/^name = "e2e"/name = "e2e-dead"/' -e "s|^serve_cmd = .*|serve_cmd = \"exit 3 # --port \$PORT\"|" \
  -e 's/^max_servers = 1/max_servers = 2/' campaign.toml > dead.toml
"$bin_dir/sweep" --campaign dead.toml 2> dead-submit.err || { cat dead-submit.err >&2; fail "submitting failed"; }
started=$SECONDS
for _ in $(seq 1 180); do
  [[ -z $(squeue --noheader --me --format=%j | grep '^inferperf-e2e-dead-' || true) ]] && break
  sleep 0.5
done
[[ -z $(squeue --noheader --me --format=%j | grep '^inferperf-e2e-dead-' || true) ]] ||
  fail "the sweeps of dead servers still run after $((SECONDS - started)) s (their wait timeout is 120 s)"
grep -q "the serve job .* has ended: stopping the sweep" results/e2e-dead/tp2/logs/sweep-*.out ||
  fail "the sweep did not say why it stopped: $(cat results/e2e-dead/tp2/logs/sweep-*.out)"
say "a server that dies stops its sweep ($((SECONDS - started)) s, not the 120 s wait)"

# --- the comparison charts -----------------------------------------------------------------------
"$bin_dir/plot" --kind compare --results-dir results/e2e --output charts/ 2> plot.err || { cat plot.err >&2; fail "plot failed"; }
for chart in frontier sla throughput; do
  [[ $(stat -c %s "charts/compare_$chart.png") -gt 20000 ]] || fail "charts/compare_$chart.png missing or empty"
done
if [[ -n ${KEEP_CHARTS:-} ]]; then
  mkdir -p "$KEEP_CHARTS" && cp charts/*.png "$KEEP_CHARTS"/
fi
say "plot --kind compare drew the three charts"
say "PASS"
