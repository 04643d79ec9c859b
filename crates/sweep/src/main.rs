//! `sweep`: ISL x concurrency sweeps against an LLM inference server, resumable and safe to stop.

use std::process::ExitCode;
use sweep::{SweepArgs, SweepOutcome};

fn main() -> ExitCode {
    let args = SweepArgs::parse_args();
    bench_cli::main_with(sweep::run(args), SweepOutcome::exit_code)
}
