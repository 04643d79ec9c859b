//! `sweep`: ISL x concurrency sweeps against an LLM inference server, resumable and safe to stop.

use bench::UsageError;
use std::process::ExitCode;
use sweep::SweepArgs;

fn main() -> ExitCode {
    let args = SweepArgs::parse_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sweep::run(args)) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
