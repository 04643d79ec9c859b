# Recipes over the commands README.md documents. `cargo install just` to use them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build every binary, optimised (for a cluster: `just build-static`, see docs/slurm.md).
build:
    cargo build --release

# Statically linked binaries that run in any container image or none (for the Slurm jobs).
build-static:
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
    @echo "static binaries in target/x86_64-unknown-linux-gnu/release/"

# The whole test suite (what CI runs after fmt and clippy).
test:
    cargo test --workspace

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
    cargo run --release -p plot -- --results-dir {{DIR}} --kind all --output {{DIR}}/charts/chart.png

# Submit the serve and sweep jobs (settings from the environment, see docs/slurm.md).
submit:
    slurm/submit.sh

# Cancel the jobs the last submit started.
cancel:
    slurm/cancel.sh

# Client fidelity against bench-sim, medians of RUNS runs, then options (docs/performance.md).
fidelity LEVELS="1,10,100,500,1000,2000" RUNS="5" *ARGS:
    cargo build --release -p bench -p bench-sim
    cargo run --release -p bench --example fidelity -- {{LEVELS}} --flood --runs {{RUNS}} {{ARGS}}

# Time to build 640 prompts of 14,000 tokens.
prompt-speed:
    cargo bench -p bench-core --bench prompts
