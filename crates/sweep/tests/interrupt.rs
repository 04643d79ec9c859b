//! Interruptions at random moments, in-process: whenever a sweep is stopped, the folder holds no
//! corrupt, truncated or mislabelled file, no cell is marked finished that was not, and the
//! resumed sweep runs exactly the cells still needed and leaves the finished ones untouched.
//!
//! The stop lands anywhere: while the tokenizer loads, while waiting for the server, in a warm-up,
//! mid-cell, between cells, while a file is being written, after the end. Each case draws its
//! moment from its seed over the span an uninterrupted sweep takes on this machine (measured
//! first), so the spread follows the machine rather than a fixed guess.

use bench_result::settings::RunSettings;
use bench_sim::{SimConfig, SimHandle, Simulator};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sweep::summary::CellStatus;
use sweep::SweepArgs;
use tokio_util::sync::CancellationToken;

/// Random moments tried. Each costs one stopped sweep and one resumed one.
const CASES: u64 = 20;
/// Of which stop while the tokenizer loads.
const EARLY: u64 = 3;
const NAME: &str = "p";
const TP: u32 = 2;
const OUTPUT_LEN: u64 = 6;
const PROMPTS_PER_CONC: u64 = 3;

fn tokenizer_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenizers/deepseek-v4")
        .display()
        .to_string()
}

async fn start_sim() -> SimHandle {
    let mut cfg = SimConfig::preset("sim-model", "fixed").expect("preset");
    cfg.timing = bench_sim::timing::Timing::Fixed {
        ttft: Duration::from_millis(3),
        itl: Duration::from_millis(4),
    };
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

fn args(url: &str, results: &Path, seed: u64) -> SweepArgs {
    let seed = seed.to_string();
    let mut argv = vec![
        "sweep",
        "--model",
        "sim-model",
        "--name",
        NAME,
        "--tp",
        "2",
        "--input-lens",
        "32,96",
        "--concurrency",
        "1,3",
        "--prompts-per-concurrency",
        "3",
        "--warmups-per-concurrency",
        "1",
        "--disable-tqdm",
        "--poll-interval",
        "50ms",
        "--wait-timeout",
        "30s",
        "--base-url",
        url,
        "--seed",
        &seed,
    ];
    let (out, tok) = (OUTPUT_LEN.to_string(), tokenizer_dir());
    argv.extend(["--output-len", &out, "--tokenizer", &tok, "--results-dir"]);
    let mut argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    argv.push(results.as_os_str().to_owned());
    SweepArgs::try_parse_from_iter(argv).expect("valid flags")
}

/// The finished cells in `dir`, file name to bytes, after checking every file there: each parses
/// whole, a finished name holds a complete, uninterrupted run of exactly the cell it names, a
/// partial file says it is incomplete, no temporary file is left, and the summary parses.
fn check_folder(dir: &Path, case: u64) -> BTreeMap<String, Vec<u8>> {
    let mut finished = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return finished;
    };
    for entry in entries {
        let entry = entry.expect("entry");
        let file = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        assert!(
            !file.ends_with(".tmp"),
            "case {case}: a temporary file is left: {file}"
        );
        if file == "sweep_summary.json" {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("summary");
            assert!(v["cells"].is_array(), "case {case}: {v}");
            continue;
        }
        if !file.ends_with(".json") {
            continue;
        }
        let result = bench_result::read(&path)
            .unwrap_or_else(|e| panic!("case {case}: {file} is not a whole result file: {e}"));
        if let Some(name) = bench_result::CellName::parse(&file) {
            check_finished(&result, &name, case);
            finished.insert(file, std::fs::read(&path).expect("read"));
        } else {
            assert!(file.contains(".partial."), "case {case}: stray file {file}");
            let prompts = result.num_prompts.unwrap_or(0);
            assert!(
                result.interrupted == Some(true) || result.completed.unwrap_or(0) < prompts,
                "case {case}: {file} is kept as partial but finished every prompt"
            );
        }
    }
    finished
}

fn partials(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".partial."))
            })
            .count()
    })
}

/// A file under a finished cell's name is that cell, complete.
fn check_finished(r: &bench_result::ResultFile, name: &bench_result::CellName, case: u64) {
    let label = name.file_name();
    let settings: &RunSettings = r.config.as_ref().expect("configuration echoed");
    assert_eq!(
        r.interrupted,
        Some(false),
        "case {case}: {label} interrupted"
    );
    assert_eq!(
        (
            settings.prompt.input_len,
            settings.output_len,
            settings.max_concurrency
        ),
        (name.isl, name.osl, Some(name.conc)),
        "case {case}: {label} holds another cell's run"
    );
    assert_eq!((name.name.as_str(), r.tp), (NAME, Some(TP)), "case {case}");
    let prompts = PROMPTS_PER_CONC * name.conc;
    assert_eq!(r.num_prompts, Some(prompts), "case {case}: {label}");
    assert_eq!(
        (r.completed, r.failed, r.not_sent),
        (Some(prompts), Some(0), Some(0)),
        "case {case}: {label} is not complete"
    );
}

/// Every row's status in the summary, by file name (rows without a file by cell).
fn statuses(rows: &[sweep::summary::CellRow]) -> BTreeMap<String, CellStatus> {
    rows.iter()
        .map(|r| {
            let key = format!(
                "{NAME}_tp{TP}_isl{}_osl{}_conc{}.json",
                r.input_len, r.output_len, r.concurrency
            );
            (key, r.status)
        })
        .collect()
}

/// When case `case` stops its sweep: the first cases while the tokenizer loads (`loading`), the
/// others stratified over the rest of a whole sweep's `span` and a little past its end, so every
/// stretch of the cells is hit whatever share of the span loading takes on this machine.
fn stop_moment(case: u64, loading: Duration, span: Duration) -> Duration {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(case);
    let u: f64 = rng.random_range(0.0..1.0);
    if case < EARLY {
        return loading.mul_f64((case as f64 + u) / EARLY as f64);
    }
    let rest = span.saturating_sub(loading).mul_f64(1.1);
    loading + rest.mul_f64(((case - EARLY) as f64 + u) / (CASES - EARLY) as f64)
}

/// Resumed, a stopped sweep runs exactly its missing cells and skips the finished ones, whose
/// files stay byte for byte as they were.
async fn resume_runs_exactly_the_missing_cells(
    url: &str,
    dir: &Path,
    case: u64,
    before: &BTreeMap<String, Vec<u8>>,
) {
    let resumed = sweep::run_until(
        args(url, dir, case),
        bench_cli::signal::Stop::by(CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("case {case}: resume: {e:#}"));
    let after = check_folder(dir, case);
    assert_eq!(after.len(), 4, "case {case}: resume finished every cell");
    for (file, status) in statuses(&resumed.rows) {
        let expected = if before.contains_key(&file) {
            CellStatus::Skipped
        } else {
            CellStatus::Done
        };
        assert_eq!(status, expected, "case {case}: {file}");
    }
    for (file, bytes) in before {
        assert!(
            after.get(file) == Some(bytes),
            "case {case}: resume changed the finished {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_stopped_at_any_moment_loses_and_mislabels_nothing_and_resumes_exactly() {
    let sim = start_sim().await;
    let root = tempfile::tempdir().expect("tempdir");

    // The span of a whole sweep, from the start of the call, on this machine now.
    let reference = root.path().join("reference");
    let t0 = Instant::now();
    let whole = sweep::run_until(
        args(&sim.url(), &reference, 7),
        bench_cli::signal::Stop::by(CancellationToken::new()),
    )
    .await
    .expect("a whole sweep runs");
    let span = t0.elapsed();
    let t1 = Instant::now();
    bench_core::tokenizer::PromptTokenizer::from_path(Path::new(&tokenizer_dir())).expect("loads");
    let loading = t1.elapsed();
    assert_eq!(whole.rows.len(), 4);
    assert_eq!(check_folder(&reference, u64::MAX).len(), 4);

    let mut stopped_mid_sweep = 0;
    for case in 0..CASES {
        let at = stop_moment(case, loading, span);
        let dir = root.path().join(format!("case{case}"));
        let token = CancellationToken::new();
        let stopper = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                token.cancel();
            })
        };
        let outcome = sweep::run_until(
            args(&sim.url(), &dir, case),
            bench_cli::signal::Stop::by(token),
        )
        .await
        .unwrap_or_else(|e| panic!("case {case}: stopped at {at:?}: {e:#}"));
        stopper.abort();
        let before = check_folder(&dir, case);
        eprintln!(
            "case {case}: stopped at {at:?}: {} cells finished, {} partial",
            before.len(),
            partials(&dir)
        );
        if before.len() < 4 {
            stopped_mid_sweep += 1;
            assert!(
                outcome.interrupted_by.is_some(),
                "case {case}: cells are missing but the sweep says it was not stopped"
            );
        }
        // No row says done for a cell without its finished file.
        for (file, status) in statuses(&outcome.rows) {
            if status == CellStatus::Done || status == CellStatus::Skipped {
                assert!(
                    before.contains_key(&file),
                    "case {case}: {file} is {status:?} but has no finished file"
                );
            }
        }

        resume_runs_exactly_the_missing_cells(&sim.url(), &dir, case, &before).await;
    }
    // The early cases stop while the tokenizer loads, so some stops always cut a sweep short.
    assert!(stopped_mid_sweep > 0, "no stop landed before a sweep ended");
    eprintln!("{stopped_mid_sweep} of {CASES} stops cut a sweep short (span {span:?})");
    sim.stop().await;
}
