# Recipes over the commands README.md documents. `cargo install just` to use them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build every binary, optimised (for a cluster: `just build-static`, see docs/slurm.md).
build:
    cargo build --release

# Statically linked binaries that run in any container image or none (for the Slurm jobs).
build-static:
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
    @echo "static binaries in target/x86_64-unknown-linux-gnu/release/"

# The whole test suite (what CI runs after fmt and clippy): cargo test, then the Slurm and vLLM
# tests, installing what they need (scripts/test).
test:
    scripts/test

# The Slurm tests alone: the workflow on a real one-node Slurm, and shellcheck (needs slurm-wlm,
# munge, curl and shellcheck; scripts/test installs them).
slurm-test:
    cargo test -p sweep --test slurm -- --ignored

# The conformance tests against a real vLLM (installs vLLM's CPU build into a cached venv).
conformance *FILTER:
    conformance/run.sh {{FILTER}}

# Regenerate testdata/results/vllm with vllm bench serve against a real vLLM (and VERSIONS).
foreign-fixtures:
    conformance/run.sh fixtures

# The test suite RUNS times in a row with another process spinning on one core; prints each
# run's time and the failures (a suite that holds on a busy machine).
stress-tests RUNS="10":
    scripts/stress-tests {{RUNS}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Dependency licenses, bans and sources (deny.toml); `cargo install cargo-deny` first.
deny:
    cargo deny check licenses bans sources

# The main job on the built-in simulator: results/ and results/charts/.
demo:
    cargo run --release -p sweep -- --simulate

# A sweep against a running server; pass sweep flags, e.g. `just sweep --base-url http://node12:8000`.
sweep *ARGS:
    cargo run --release -p sweep -- {{ARGS}}

# Charts of a results folder: `just plot results` (all kinds, into results/charts/).
plot DIR="results":
    cargo run --release -p plot -- --results-dir {{DIR}} --kind all --output {{DIR}}/charts/

# Submit the serve and sweep jobs (settings from the environment, see docs/slurm.md).
submit:
    slurm/submit.sh

# Cancel the jobs the last submit started.
cancel:
    slurm/cancel.sh

# Submit a campaign: a serve and a sweep job per configuration of FILE (docs/campaigns.md).
campaign FILE:
    cargo build --release -p sweep
    target/release/sweep --campaign {{FILE}}

# Print every sbatch command a campaign would run; submit nothing.
campaign-dry-run FILE:
    cargo build --release -p sweep
    target/release/sweep --campaign {{FILE}} --dry-run

# 10,000 streams held for minutes: the client's memory and open descriptors over time
# (docs/performance.md, "Load").
load STREAMS="10000" WAVES="3" OUTPUT="120" ITL_MS="500":
    scripts/load {{STREAMS}} {{WAVES}} {{OUTPUT}} {{ITL_MS}}

# Client fidelity against bench-sim, medians of RUNS runs, then options (docs/performance.md).
fidelity LEVELS="1,10,100,500,1000,2000" RUNS="5" *ARGS:
    cargo build --release -p bench -p bench-sim
    cargo run --release -p bench --example fidelity -- {{LEVELS}} --flood --runs {{RUNS}} {{ARGS}}

# How close the demo comes to its simulator's model on this machine: real time against the demo's
# clock (stepped unless told: `just demo-fidelity stepped,20`), idle and with one core loaded
# (docs/simulator.md).
demo-fidelity CLOCKS="stepped" *ARGS:
    cargo build --release -p sweep --bins --examples
    target/release/examples/demo_fidelity {{CLOCKS}} {{ARGS}}

# How long plot takes for 25 result files, every chart kind, PNG and SVG.
plot-speed:
    cargo run --release -p plot --example render_speed 2>&1 | grep -v '^wrote'

# Time to build 640 prompts of 14,000 tokens.
prompt-speed:
    cargo bench -p bench-core --bench prompts
