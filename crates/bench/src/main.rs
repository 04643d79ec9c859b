//! `bench`: one benchmark run against an OpenAI-compatible LLM inference server.

use bench::{BenchArgs, Outcome};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    bench_cli::main_with(bench::run(args), Outcome::exit_code)
}
