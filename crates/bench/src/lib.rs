//! The `bench` command: one benchmark run, as a library so `sweep` and tests drive it in-process.
//!
//! [`run`] builds the prompts, sends the requests, prints the summary and writes the result file.
//! It returns an [`Outcome`] whose exit code is the contract: 0 when requests completed, 1 when
//! every request failed, 130 or 143 after SIGINT or SIGTERM (the result is written first).

pub mod args;
pub mod signal;

pub use args::{BenchArgs, CommonArgs, Shape, UsageError};

use anyhow::Context;
use bench_core::progress::ProgressMode;
use bench_core::{result, summary, RunReport};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub result_path: PathBuf,
    pub completed: usize,
    pub failed: usize,
    pub interrupted_by: Option<signal::Signal>,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self.interrupted_by {
            Some(sig) => ExitCode::from(sig.exit_code()),
            None if self.completed == 0 => ExitCode::from(1),
            None => ExitCode::SUCCESS,
        }
    }
}

/// The body of a command's `main`: a multi-threaded runtime, `run`, and the exit code. Usage
/// errors ([`UsageError`] anywhere in the chain) exit 2, other errors 1, with the whole chain.
pub fn main_with<T>(
    run: impl std::future::Future<Output = anyhow::Result<T>>,
    exit_code: impl FnOnce(&T) -> ExitCode,
) -> ExitCode {
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
    match runtime.block_on(run) {
        Ok(outcome) => exit_code(&outcome),
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

/// Runs one benchmark from parsed flags. Usage errors come back as [`UsageError`] inside the
/// `anyhow::Error`, so the caller can exit 2 for them.
pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let config = args.common.to_config(args.shape())?;
    let stop = CancellationToken::new();
    let signals = signal::listen(stop.clone());
    let tokenizer = bench_core::load_tokenizer(&config)
        .await
        .map_err(|e| UsageError {
            flag: "--tokenizer",
            message: match e {
                bench_core::RunError::Tokenizer(t) => t.to_string(),
                other => other.to_string(),
            },
        })?;
    eprintln!(
        "building {} prompts of ~{} tokens ({} warm-up) with {}",
        config.num_prompts, config.prompt.input_len, config.num_warmups, tokenizer.source
    );
    let prepared = bench_core::prepare(&config, tokenizer).await?;
    eprintln!(
        "{}",
        prompt_line(&prepared.prompt_stats, config.prompt.seed)
    );
    if let Some(caution) = bench_core::prompt::seed_caution(config.prompt.seed_origin) {
        eprintln!("note: {caution}");
    }
    let progress = ProgressMode::detect(args.common.disable_tqdm);
    eprintln!("sending to {} (model `{}`)", config.url(), config.model);
    let report = bench_core::execute(&config, &prepared, &stop, progress).await?;
    let path = args
        .result_filepath
        .clone()
        .unwrap_or_else(|| default_path(&report));
    write_report(&report, &path)?;
    if let Some(events) = &args.save_events {
        result::write_events(events, &report.records)
            .with_context(|| format!("--save-events {}", events.display()))?;
    }
    Ok(Outcome {
        result_path: path,
        completed: report.metrics.completed,
        failed: report.metrics.failed,
        interrupted_by: signals.received(),
    })
}

/// Prints the summary and warnings, then writes the result file.
pub fn write_report(report: &RunReport, path: &std::path::Path) -> anyhow::Result<()> {
    print!("{}", summary::table(report));
    for w in summary::warnings(report) {
        eprintln!("warning: {w}");
    }
    result::write_atomic(path, &result::to_json(report))
        .with_context(|| format!("writing the result file {}", path.display()))?;
    eprintln!("result written to {}", path.display());
    Ok(())
}

/// One line of prompt-length figures.
pub fn prompt_line(s: &bench_core::prompt::PromptStats, seed: u64) -> String {
    format!(
        "prompts (seed {seed}): {} built in {:.2}s, tokens mean {:.1} (target {:.1}), min {}, max {}, {} missed their target (max miss {}), {} checked by full re-encode",
        s.count, s.build_seconds, s.mean, s.target_mean, s.min, s.max, s.missed, s.max_abs_miss, s.verified_by_reencoding
    )
}

fn default_path(report: &RunReport) -> PathBuf {
    PathBuf::from(format!(
        "inferperf-{}.json",
        report.started_at.format("%Y%m%d-%H%M%S")
    ))
}
