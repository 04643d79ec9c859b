//! SIGINT and SIGTERM at any moment of a `bench` process: a property test over seeded stop
//! moments spread across a whole run, from start-up to past its end.
//!
//! Whatever the moment, the process exits 0 with a complete result, or 130/143 (the signal it
//! got) with a result that accounts for every prompt and says whether it was cut, or is killed
//! by a signal that came before its handler was installed (no file) or after the run ended (a
//! whole one). Never a truncated or
//! half-written file, never a temporary file left behind, never a failure blamed on the server.

#![cfg(unix)]

mod support;

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{tokenizer_dir, Sim};

const CASES: u64 = 8;
const PROMPTS: u64 = 12;

fn spawn(url: &str, out: &Path) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("bench"))
        .args(["--model", "sim-model", "--tokenizer", &tokenizer_dir()])
        .args(["--base-url", url, "--disable-tqdm"])
        .args(["--random-input-len", "64", "--random-output-len", "10"])
        .args([
            "--num-prompts",
            &PROMPTS.to_string(),
            "--max-concurrency",
            "3",
        ])
        .arg("--result-filepath")
        .arg(out)
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bench starts")
}

/// When case `case` signals its process: stratified over `span` and a little past its end, so
/// start-up, the requests and the writing of the file are all hit.
fn stop_moment(case: u64, span: Duration) -> Duration {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(case);
    let u: f64 = rng.random_range(0.0..1.0);
    span.mul_f64(1.1 * (case as f64 + u) / CASES as f64)
}

/// Only the result file and, once it is there, its per-request file (whole), never a temporary
/// one, are left in `dir`.
fn assert_no_leftovers(dir: &Path, case: u64) {
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match name.as_str() {
            "run.json" => {}
            "run.requests.jsonl" => {
                assert!(
                    dir.join("run.json").is_file(),
                    "case {case}: per-request file without its result"
                );
                let lines = bench_result::requests::read(&entry.path())
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
                assert!(lines.len() as u64 <= PROMPTS, "case {case}");
            }
            other => panic!("case {case}: {other} left behind"),
        }
    }
}

/// What is in the result file, if there is one: every prompt accounted for, `interrupted` true
/// exactly when something was cut, and no failure but the interruption. `None` with no file.
fn check_file(case: u64, out: &Path) -> Option<(u64, bool)> {
    let bytes = std::fs::read(out).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("case {case}: the result does not parse: {e}"));
    let count = |key: &str| {
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("case {case}: {key}"))
    };
    let (completed, failed, not_sent) = (count("completed"), count("failed"), count("not_sent"));
    assert_eq!(
        completed + failed + not_sent,
        PROMPTS,
        "case {case}: prompts unaccounted for"
    );
    let failures = v["failures"].as_object().cloned().unwrap_or_default();
    assert!(
        failures.keys().all(|k| k == "interrupted"),
        "case {case}: a stop was blamed on the server: {failures:?}"
    );
    let interrupted = v["interrupted"].as_bool().expect("interrupted");
    assert_eq!(
        interrupted,
        not_sent > 0 || failures.contains_key("interrupted"),
        "case {case}: `interrupted` does not match what was cut"
    );
    Some((completed, interrupted))
}

fn check(case: u64, signal: &str, status: std::process::ExitStatus, out: &Path) -> &'static str {
    let file = check_file(case, out);
    let expected = if signal == "INT" { 130 } else { 143 };
    match (status.code(), file) {
        // Killed before the handler was installed (too early for a file), or after the run
        // ended and wrote its whole result.
        (None, None) => "killed before the handler",
        (None, Some((completed, interrupted))) => {
            assert!(
                completed == PROMPTS && !interrupted,
                "case {case}: killed, and the file is not a whole run"
            );
            "killed after the run"
        }
        (Some(code), None) => panic!("case {case}: exit {code} and no result file"),
        (Some(0), Some((completed, _))) => {
            assert_eq!(completed, PROMPTS, "case {case}: exit 0 but incomplete");
            "finished first"
        }
        (Some(code), Some((_, interrupted))) => {
            assert_eq!(code, expected, "case {case}: SIG{signal} exits {code}");
            if interrupted {
                "interrupted"
            } else {
                "every prompt finished in the grace period"
            }
        }
    }
}

#[test]
fn a_signal_at_any_moment_leaves_a_whole_result_or_none() {
    let sim = Sim::start(|c| {
        c.timing = bench_sim::timing::Timing::Fixed {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(10),
        };
    });
    let root = tempfile::tempdir().expect("tempdir");

    // The span of a whole run, from spawn to exit, on this machine now.
    let reference = root.path().join("reference.json");
    let t0 = Instant::now();
    let status = spawn(&sim.url(), &reference).wait().expect("runs");
    let span = t0.elapsed();
    assert!(status.success(), "an uninterrupted run exits 0");

    let mut interrupted = 0;
    for case in 0..CASES {
        let signal = if case % 2 == 0 { "INT" } else { "TERM" };
        let dir = root.path().join(format!("case{case}"));
        std::fs::create_dir(&dir).expect("dir");
        let out = dir.join("run.json");
        let at = stop_moment(case, span);
        let mut child = spawn(&sim.url(), &out);
        std::thread::sleep(at);
        Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("kill runs");
        let status = child.wait().expect("exits");
        let what = check(case, signal, status, &out);
        interrupted += usize::from(what == "interrupted");
        assert_no_leftovers(&dir, case);
        eprintln!("case {case}: SIG{signal} at {at:?} of {span:?}: {what}");
    }
    // Stops are spread over the whole span, so some always land mid-run.
    assert!(interrupted > 0, "no signal landed while requests ran");
}
