//! The `bench` command: one benchmark run, as a library so `sweep` and tests drive it in-process.
//!
//! [`run`] builds the prompts, sends the requests, prints the summary and writes the result file.
//! It returns an [`Outcome`] whose exit code is the contract: 0 when requests completed, 1 when
//! every request failed, 130 or 143 after SIGINT or SIGTERM (the result is written first).

pub mod args;

pub use args::BenchArgs;
pub use bench_cli::{signal, CommonArgs, Shape, UsageError};

use anyhow::Context;
use bench_core::progress::ProgressMode;
use bench_core::{console, result, RunReport};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Runs one benchmark from parsed flags, stopped early by SIGINT or SIGTERM. Usage errors come
/// back as [`UsageError`] inside the `anyhow::Error`, so the caller can exit 2 for them.
pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    run_until(args, signal::Stop::on_signals()).await
}

/// [`run`], stopped early by `stop`.
pub async fn run_until(args: BenchArgs, stop: signal::Stop) -> anyhow::Result<Outcome> {
    let config = args.common.to_config(args.shape())?;
    let runs = u32::try_from(args.num_runs)
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| UsageError {
            flag: "--num-runs",
            message: format!("from 1 to 1000 runs, got {}", args.num_runs),
        })?;
    check_outputs(&args)?;
    bench_core::open_files::ensure(config.max_in_flight() as u64)?;
    let tokenizer = bench_core::load_tokenizer(&config)
        .await
        .map_err(|e| args.common.tokenizer_error(&e))?;
    eprintln!(
        "building {} prompts of ~{} tokens ({} warm-up) with {}",
        config.num_prompts, config.prompt.input_len, config.num_warmups, tokenizer.source
    );
    if let Some(caution) = bench_core::prompt::seed_caution(config.prompt.seed_origin) {
        eprintln!("note: {caution}");
    }
    let progress = ProgressMode::detect(args.common.disable_tqdm);
    let mut first: Option<PathBuf> = None;
    let (mut completed, mut failed) = (0, 0);
    let mut files = Vec::new();
    for run in 1..=runs {
        let mut config = config.clone();
        if run > 1 {
            config.prompt.seed =
                bench_core::prompt::derive_seed(config.prompt.seed, &[u64::from(run)]);
            eprintln!("run {run} of {runs}");
        }
        let prepared = bench_core::prepare(&config, std::sync::Arc::clone(&tokenizer)).await?;
        eprintln!(
            "{}",
            prompt_line(&prepared.prompt_stats, config.prompt.seed)
        );
        eprintln!("sending to {} (model `{}`)", config.url(), config.model);
        let report = bench_core::execute(&config, &prepared, stop.token(), progress).await?;
        let base = first.get_or_insert_with(|| {
            args.result_filepath
                .clone()
                .unwrap_or_else(|| default_path(&report))
        });
        let path = run_path(base, run);
        write_report(&report, &path)?;
        if let Some(events) = &args.save_events {
            let events = run_path(events, run);
            result::write_events(&events, &report.records)
                .with_context(|| format!("--save-events {}", events.display()))?;
        }
        completed += report.metrics.completed;
        failed += report.metrics.failed;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, result::to_file(&report)));
        if stop.received().is_some() {
            break;
        }
    }
    if let (true, Some(first)) = (files.len() > 1, &first) {
        sum_up(&files, first)?;
    }
    Ok(Outcome {
        result_path: first.unwrap_or_default(),
        completed,
        failed,
        interrupted_by: stop.received(),
    })
}

/// The files a run writes can be written: checked before any request, so a path that cannot be
/// written loses no measurement.
fn check_outputs(args: &BenchArgs) -> Result<(), UsageError> {
    let default_dir = std::path::Path::new("inferperf-result.json");
    check_writable(
        "--result-filepath",
        args.result_filepath.as_deref().unwrap_or(default_dir),
    )?;
    if let Some(path) = &args.save_events {
        check_writable("--save-events", path)?;
    }
    Ok(())
}

/// Prints the intervals over the runs `files` ((name, result) each) and writes them beside the
/// first run's file `first`.
fn sum_up(
    files: &[(String, bench_result::ResultFile)],
    first: &std::path::Path,
) -> anyhow::Result<()> {
    let summary = bench_result::repeats::RepeatsFile::of(files);
    print!("{}", repeats_table(&summary));
    let path = bench_result::repeats::path_for(first);
    summary
        .write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("intervals over the runs written to {}", path.display());
    Ok(())
}

/// Run `run`'s file: `path` itself for the first, `NAME.runK.EXT` beside it for the others.
pub fn run_path(path: &std::path::Path, run: u32) -> PathBuf {
    if run == 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}.run{run}.{}", ext.to_string_lossy()),
        None => format!("{stem}.run{run}"),
    };
    path.with_file_name(name)
}

/// Each headline figure over the runs: mean, 95% interval, coefficient of variation.
fn repeats_table(summary: &bench_result::repeats::RepeatsFile) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:=^78}\n{:<20} {:>12} {:>27} {:>8}\n",
        format!(
            " {} runs: mean and 95% interval (Student's t) ",
            summary.runs.len()
        ),
        "figure",
        "mean",
        "95% interval",
        "CV"
    );
    for figure in bench_result::repeats::Figure::ALL {
        let Some(i) = summary.figures.get(figure.name()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{:<20} {:>12.2} {:>27} {:>7.1}%",
            figure.name(),
            i.mean,
            format!("{:.2} .. {:.2}", i.low, i.high),
            i.cv * 100.0
        );
    }
    out.push_str(&"=".repeat(78));
    out.push('\n');
    out
}

/// Prints the summary and warnings, then writes the result file and the per-request file beside
/// it; if `path` cannot be written
/// after all (the disk filled, the folder went away), writes it to a temporary file instead and
/// says where, so the measurement is not lost.
pub fn write_report(report: &RunReport, path: &std::path::Path) -> anyhow::Result<()> {
    print!("{}", console::table(report));
    for w in console::warnings(report) {
        eprintln!("warning: {w}");
    }
    let value = result::to_json(report);
    match result::write_atomic(path, &value) {
        Ok(()) => {
            eprintln!("result written to {}", path.display());
            write_requests(report, path);
        }
        Err(e) => {
            let rescue = std::env::temp_dir().join(format!(
                "inferperf-{}-{}.json",
                report.started_at.format("%Y%m%d-%H%M%S"),
                std::process::id()
            ));
            result::write_atomic(&rescue, &value).with_context(|| {
                format!(
                    "writing the result file {} ({e}), and then {}",
                    path.display(),
                    rescue.display()
                )
            })?;
            eprintln!(
                "error: cannot write the result file {} ({e}); the result is in {} instead",
                path.display(),
                rescue.display()
            );
            write_requests(report, &rescue);
            anyhow::bail!("the result file {} could not be written", path.display());
        }
    }
    Ok(())
}

/// Writes the per-request file beside the result at `result_path`; a failure is a warning, as
/// the result itself is written.
fn write_requests(report: &RunReport, result_path: &std::path::Path) {
    match result::write_requests(result_path, report) {
        Ok(path) => eprintln!("per-request detail written to {}", path.display()),
        Err(e) => eprintln!(
            "warning: cannot write the per-request file beside {} ({e}); the result has every figure",
            result_path.display()
        ),
    }
}

/// Fails with a usage error naming `flag` when `path` is a folder or its folder cannot be
/// created or written (tried by creating and removing a temporary file there).
pub fn check_writable(flag: &'static str, path: &std::path::Path) -> Result<(), UsageError> {
    if path.is_dir() {
        return Err(UsageError {
            flag,
            message: format!("{} is a folder; give a file name", path.display()),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".inferperf-write-check")
                .tempfile_in(dir)
                .map(drop)
        })
        .map_err(|e| UsageError {
            flag,
            message: format!("cannot write in {} ({e})", dir.display()),
        })
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
