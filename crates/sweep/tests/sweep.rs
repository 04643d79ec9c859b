//! The `sweep` binary against simulators the tests start and stop themselves.

use assert_cmd::Command;
use bench_sim::{SimConfig, SimHandle, Simulator};
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tokenizer_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenizers/deepseek-v4")
        .display()
        .to_string()
}

/// Simulators on their own runtime so the binary under test can reach them.
struct Sims {
    runtime: tokio::runtime::Runtime,
}

impl Sims {
    fn new() -> Self {
        Self {
            runtime: tokio::runtime::Runtime::new().expect("runtime"),
        }
    }

    fn start(&self, itl_ms: u64) -> SimHandle {
        self.start_with(itl_ms, |_| {})
    }

    fn start_with(&self, itl_ms: u64, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
        let mut cfg = SimConfig::preset("sim-model", "fixed").expect("preset");
        cfg.timing = bench_sim::timing::Timing::Fixed {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(itl_ms),
        };
        tweak(&mut cfg);
        self.runtime
            .block_on(Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr")))
            .expect("simulator starts")
    }

    fn stop(&self, h: SimHandle) {
        self.runtime.block_on(h.stop());
    }
}

/// 2 input lengths x 2 concurrencies, tiny requests.
const MATRIX: &[&str] = &[
    "--input-lens",
    "64,128",
    "--concurrency",
    "1,2",
    "--output-len",
    "8",
    "--prompts-per-concurrency",
    "3",
    "--warmups-per-concurrency",
    "1",
];

/// The sweep binary with the test matrix, fast polling, and `results` as its results folder.
fn sweep_process(results: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sweep"));
    cmd.args([
        "--model",
        "sim-model",
        "--tokenizer",
        &tokenizer_dir(),
        "--name",
        "t",
        "--tp",
        "2",
    ])
    .args(MATRIX)
    .args([
        "--poll-interval",
        "100ms",
        "--disable-tqdm",
        "--results-dir",
    ])
    .arg(results)
    .args(extra)
    .env_remove("SERVER_INFO_FILE")
    .env_remove("RESULTS_DIR");
    cmd
}

fn sweep(results: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::from_std(sweep_process(results, extra));
    cmd.args(["--wait-timeout", "30s"]);
    cmd
}

fn summary(results: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(results.join("sweep_summary.json")).expect("summary"),
    )
    .expect("json");
    v["cells"].as_array().cloned().unwrap_or_default()
}

fn cell_files(results: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(results) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("t_tp2_") && n.ends_with(".json") && !n.contains("partial"))
        .collect();
    names.sort();
    names
}

#[test]
fn dry_run_lists_cells_and_file_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    sweep(
        dir.path(),
        &["--dry-run", "--base-url", "http://127.0.0.1:9"],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("t_tp2_isl128_osl8_conc2.json"))
    .stdout(predicate::str::contains("prompts     6"));
}

#[test]
fn a_whole_sweep_writes_one_file_per_cell_and_a_summary() {
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    sweep(dir.path(), &["--base-url", &sim.url()])
        .assert()
        .success();
    assert_eq!(
        cell_files(dir.path()),
        [
            "t_tp2_isl128_osl8_conc1.json",
            "t_tp2_isl128_osl8_conc2.json",
            "t_tp2_isl64_osl8_conc1.json",
            "t_tp2_isl64_osl8_conc2.json"
        ]
    );
    let rows = summary(dir.path());
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "done"
        && r["completed"].as_u64() == Some(r["concurrency"].as_u64().unwrap_or(0) * 3)));
    // Whether the client kept up depends on the machine; that each row says is what is checked.
    assert!(rows.iter().all(|r| r["client_bound"].is_boolean()));
    let csv = std::fs::read_to_string(dir.path().join("sweep_summary.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 5);
    assert!(csv
        .lines()
        .next()
        .is_some_and(|h| h.contains(",client_bound,")));
    let cell: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("t_tp2_isl64_osl8_conc2.json")).expect("cell"),
    )
    .expect("json");
    assert_eq!(cell["config"]["ignore_eos"], true);
    assert_eq!(cell["config"]["prompt"]["range_ratio"], 0.2);
    assert_eq!(cell["warmup"]["requests"], 2);
    // Each cell's requests, one line each, beside it.
    for name in cell_files(dir.path()) {
        let path = bench_result::requests::path_for(&dir.path().join(&name));
        let lines = bench_result::requests::read(&path).expect("per-request file");
        let conc: usize = name
            .trim_end_matches(".json")
            .rsplit("conc")
            .next()
            .and_then(|c| c.parse().ok())
            .expect("concurrency in the name");
        assert_eq!(lines.len(), conc * 3, "{name}");
        assert!(lines.iter().all(|l| l.ok && l.output_tokens == 8), "{name}");
    }
    // A second run skips every finished cell.
    sweep(dir.path(), &["--base-url", &sim.url()])
        .assert()
        .success()
        .stderr(predicate::str::contains("skipped"));
    assert!(summary(dir.path()).iter().all(|r| r["status"] == "skipped"));
    sims.stop(sim);
}

/// A simulator that cannot keep its schedule says so in every place a user looks: each cell's
/// file (`sim_*` keys), the cell's line and the summary. A million times real time is a schedule
/// no machine keeps (the small model's steps last nanoseconds), so the test does not depend on
/// how busy this one is.
#[test]
fn a_simulator_that_cannot_keep_its_schedule_is_flagged_in_every_cell() {
    let sims = Sims::new();
    let sim = sims.start_with(1, |c| {
        c.timing = bench_sim::timing::preset("small-tp1").expect("preset");
        c.time_scale = 1e6;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sweep(dir.path(), &["--base-url", &sim.url()])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    for name in cell_files(dir.path()) {
        let cell: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(&name)).expect("cell"))
                .expect("json");
        assert_eq!(cell["sim_time_scale"], 1e6, "{name}");
        assert_eq!(cell["sim_kept_schedule"], false, "{name}");
        let p99 = cell["sim_event_lateness_p99_ms"]
            .as_f64()
            .expect("event lateness");
        assert!(p99 * 1e6 > 20.0, "{name}: {p99} ms at P99");
        assert!(
            cell["sim_events"].as_f64().is_some_and(|n| n > 0.0),
            "{name}"
        );
        assert!(cell["sim_time_lost_share"].is_number(), "{name}");
        let warnings = cell["server"]["warnings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("handed token events over"))),
            "{name}: {warnings:?}"
        );
    }
    assert_eq!(cell_files(dir.path()).len(), 4);
    let flagged = stderr
        .lines()
        .filter(|l| l.contains("the simulator fell behind: see the result's warnings"))
        .count();
    assert_eq!(flagged, 4, "{stderr}");
    assert!(summary(dir.path())
        .iter()
        .all(|r| r["sim_kept_schedule"] == false));
    sims.stop(sim);
}

/// The per-request figures of a run's cells: (file, input tokens, TTFT, TPOT, E2EL in ms).
fn request_rows(results: &Path) -> Vec<(String, u64, f64, f64, f64)> {
    let mut rows = Vec::new();
    for name in cell_files(results) {
        let path = results.join(name.replace(".json", ".requests.jsonl"));
        let text = std::fs::read_to_string(&path).expect("per-request file");
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("json line");
            let ms = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {line}"));
            rows.push((
                name.clone(),
                r["input_tokens"].as_u64().expect("input tokens"),
                ms("ttft_ms"),
                ms("tpot_ms"),
                ms("e2el_ms"),
            ));
        }
    }
    rows
}

/// `sweep --simulate` on its stepped clock, the default: every cell records the model's own
/// times, the same to the nanosecond with both cores taken by other work as on an idle machine,
/// and a lone stream's TTFT is its prompt's prefill in the preset, exactly.
#[test]
fn the_stepped_demo_records_the_models_times_whatever_the_machine_takes() {
    let idle = tempfile::tempdir().expect("tempdir");
    let out = sweep(idle.path(), &["--simulate"]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("on its stepped clock"), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.trim_start().starts_with("simulator at ")),
        "no pace: {stderr}"
    );
    assert!(
        stderr.contains("their times are the modelled deployment's"),
        "{stderr}"
    );
    let busy = tempfile::tempdir().expect("tempdir");
    let spinners: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("a spinning process")
        })
        .collect();
    let loaded = sweep(busy.path(), &["--simulate"]).assert();
    for mut s in spinners {
        let _ = s.kill();
        let _ = s.wait();
    }
    loaded.success();
    let names = cell_files(idle.path());
    assert_eq!(names.len(), 4, "{stderr}");
    for name in &names {
        let cell: serde_json::Value =
            serde_json::from_slice(&std::fs::read(idle.path().join(name)).expect("cell"))
                .expect("json");
        assert_eq!(cell["sim_clock"], "stepped", "{name}");
        assert_eq!(cell["sim_time_scale"], 1.0, "{name}");
        assert_eq!(cell["sim_stepped_timeouts"], 0.0, "{name}");
        assert_eq!(cell["sim_kept_schedule"], true, "{name}");
    }
    let (quiet, loaded) = (request_rows(idle.path()), request_rows(busy.path()));
    assert_eq!(quiet.len(), 40);
    for (a, b) in quiet.iter().zip(&loaded) {
        assert_eq!((&a.0, a.1), (&b.0, b.1), "the same requests");
        for (x, y) in [(a.2, b.2), (a.3, b.3), (a.4, b.4)] {
            assert!(
                (x - y).abs() < 1e-6,
                "{a:?} idle, {b:?} with both cores taken"
            );
        }
    }
    let timing = bench_sim::timing::preset("minimax-m2-tp4").expect("the demo's preset");
    for (name, input, ttft, ..) in quiet.iter().filter(|r| r.0.ends_with("_conc1.json")) {
        let lone = timing.lone_ttft(*input).as_secs_f64() * 1e3;
        // It arrives at an idle engine, which starts the nanosecond after.
        assert!(
            (ttft - lone).abs() < 1e-3,
            "{name}: {ttft} ms against {lone} ms"
        );
    }
}

/// The stepped clock has no time scale: asking for one without the wall clock is an error that
/// says what to add, before anything runs.
#[test]
fn a_time_scale_without_the_wall_clock_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    sweep(dir.path(), &["--simulate", "--sim-time-scale", "5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--sim-time-scale: the stepped clock has no time scale",
        ))
        .stderr(predicate::str::contains("--sim-clock wall"));
    assert!(cell_files(dir.path()).is_empty());
    sweep(
        dir.path(),
        &["--simulate", "--sim-clock", "wall", "--sim-time-scale", "0"],
    )
    .assert()
    .failure()
    .stderr(predicate::str::contains(
        "--sim-time-scale: must be above 0",
    ));
}

/// `sweep --simulate --sim-clock wall`, on a small matrix: it measures what the machine adds,
/// paces each cell within the scale allowed, records the scale in every file, draws the charts,
/// and tells the reader that the files are in scaled time, except when they are not.
#[test]
fn the_wall_clock_demo_paces_each_cell_records_its_scale_and_draws_modelled_time() {
    for max in [6.0, 1.0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = sweep(
            dir.path(),
            &[
                "--simulate",
                "--sim-clock",
                "wall",
                "--sim-time-scale",
                &max.to_string(),
            ],
        )
        .assert()
        .success();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(
            stderr.contains("the client and this machine add") && stderr.contains("(at most"),
            "{stderr}"
        );
        let names = cell_files(dir.path());
        assert_eq!(names.len(), 4, "{stderr}");
        for name in &names {
            let cell: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join(name)).expect("cell"))
                    .expect("json");
            let scale = cell["sim_time_scale"].as_f64().expect("scale recorded");
            assert!(
                (1.0..=max).contains(&scale),
                "{name}: {scale}x, at most {max}x"
            );
            assert!(cell["sim_kept_schedule"].is_boolean(), "{name}");
            // The demo's warm-up only opens connections: one token each.
            assert_eq!(cell["config"]["warmup_output_len"], 1, "{name}");
            assert!(cell["warmup"]["requests"].as_u64() > Some(0), "{name}");
        }
        let paced = stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("simulator at "))
            .count();
        let reruns = stderr.matches("running this cell again at").count();
        assert_eq!(paced, 4 + reruns, "{stderr}");
        for chart in ["throughput", "latency", "sla", "pareto"] {
            let png = dir.path().join("charts").join(format!("t_{chart}.png"));
            assert!(png.is_file(), "{} missing: {stderr}", png.display());
        }
        let noted = stderr.contains("running faster than real time");
        assert_eq!(noted, max > 1.0, "{stderr}");
    }
}

/// The demo's cells, as `--dry-run` lists them: (input length, concurrency, prompts, warm-ups).
fn demo_cells(dir: &Path, extra: &[&str]) -> Vec<(u64, u64, u64, u64)> {
    let out = Command::cargo_bin("sweep")
        .expect("sweep is built")
        .args(["--simulate", "--dry-run", "--results-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("SERVER_INFO_FILE")
        .env_remove("RESULTS_DIR")
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    stdout
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| -> u64 {
                let at = words.iter().position(|w| *w == key).expect(key);
                words[at + 1].parse().expect("a number")
            };
            (
                after("isl"),
                after("conc"),
                after("prompts"),
                after("warm-up"),
            )
        })
        .collect()
}

#[test]
fn the_demo_measures_five_prompts_per_stream_and_ten_at_least_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cells = demo_cells(dir.path(), &[]);
    assert_eq!(cells.len(), 9, "{cells:?}");
    for (isl, conc, prompts, warmups) in &cells {
        assert!([1024, 4096, 8192].contains(isl), "{cells:?}");
        assert!([1, 4, 16].contains(conc), "{cells:?}");
        assert_eq!(
            (*prompts, *warmups),
            ((5 * conc).max(10), *conc),
            "{cells:?}"
        );
    }
    let told = demo_cells(
        dir.path(),
        &[
            "--prompts-per-concurrency",
            "10",
            "--min-prompts",
            "1",
            "--warmups-per-concurrency",
            "2",
        ],
    );
    assert_eq!(told.len(), 9, "{told:?}");
    for (_, conc, prompts, warmups) in &told {
        assert_eq!((*prompts, *warmups), (10 * conc, 2 * conc), "{told:?}");
    }
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        written.is_empty(),
        "a dry run measures nothing: {written:?}"
    );
}

#[test]
fn a_server_info_file_that_appears_late_is_waited_for() {
    use std::io::BufRead;
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("server_info.txt");
    let results = dir.path().join("results");
    let mut child = sweep_process(&results, &["--server-info", &info.display().to_string()])
        .args(["--wait-timeout", "60s"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sweep starts");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut waited = false;
    let mut lines = Vec::new();
    // The file is written once the sweep says it is waiting for it.
    for line in stderr.lines().map_while(Result::ok) {
        if !waited && line.contains("to hold the server") {
            std::fs::write(&info, format!("{}\n", sim.url())).expect("write");
            waited = true;
        }
        lines.push(line);
    }
    let status = child.wait().expect("exits");
    assert!(status.success(), "{}", lines.join("\n"));
    assert!(
        waited,
        "the sweep never said it was waiting: {}",
        lines.join("\n")
    );
    assert_eq!(cell_files(&results).len(), 4);
    sims.stop(sim);
}

#[test]
fn a_server_that_moves_to_another_port_is_followed() {
    let sims = Sims::new();
    let first = sims.start(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("server_info.txt");
    std::fs::write(&info, format!("{}\n", first.url())).expect("write");
    let results = dir.path().join("results");
    let info_arg = info.display().to_string();
    let child = sweep_process(
        &results,
        &[
            "--wait-timeout",
            "60s",
            "--retries",
            "3",
            "--server-info",
            &info_arg,
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawns");
    // Wait for the first finished cell, then kill the server mid-sweep.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cell_files(&results).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !cell_files(&results).is_empty(),
        "first cell never finished"
    );
    sims.stop(first);
    std::fs::remove_file(&info).expect("serve job removes the file");
    std::thread::sleep(Duration::from_millis(800));
    let second = sims.start(1);
    std::fs::write(&info, format!("{}\n", second.url())).expect("rewrite");
    let out = child.wait_with_output().expect("exits");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&second.url()),
        "the sweep moved to the new server: {log}"
    );
    assert_eq!(cell_files(&results).len(), 4);
    assert!(summary(&results).iter().all(|r| r["status"] == "done"));
    sims.stop(second);
}

#[cfg(unix)]
#[test]
fn sigterm_then_resume_skips_exactly_the_finished_cells() {
    let sims = Sims::new();
    let sim = sims.start(40);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sweep_process(dir.path(), &["--base-url", &sim.url()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cell_files(dir.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Signal inside the next cell (each takes over a second here), not between two cells, where
    // there is nothing to interrupt.
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert_eq!(child.wait().expect("exits").code(), Some(143));
    let finished = cell_files(dir.path());
    assert!(!finished.is_empty() && finished.len() < 4, "{finished:?}");
    let rows = summary(dir.path());
    assert_eq!(
        rows.last().map(|r| r["status"].clone()),
        Some("interrupted".into())
    );
    let partials = std::fs::read_dir(dir.path()).expect("dir").filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.file_name().to_string_lossy().contains(".partial.json"))
    });
    assert_eq!(
        partials.count(),
        1,
        "the interrupted cell is kept, under a name resume ignores"
    );

    sweep(dir.path(), &["--base-url", &sim.url()])
        .assert()
        .success();
    let rows = summary(dir.path());
    let skipped = rows.iter().filter(|r| r["status"] == "skipped").count();
    assert_eq!(
        skipped,
        finished.len(),
        "exactly the finished cells are skipped"
    );
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "done").count(),
        4 - finished.len()
    );
    sims.stop(sim);
}

#[test]
fn a_malformed_server_info_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("server_info.txt");
    std::fs::write(&info, "node12 port 8000\n").expect("write");
    sweep(
        &dir.path().join("r"),
        &["--server-info", &info.display().to_string()],
    )
    .assert()
    .code(1)
    .stderr(
        predicate::str::contains("server_info.txt")
            .and(predicate::str::contains("node12 port 8000")),
    );
}

#[test]
fn a_results_folder_that_cannot_be_written_is_refused_before_any_cell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    sweep(&file.join("results"), &["--base-url", "http://127.0.0.1:9"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--results-dir"));
}

/// A cell's file measured under other settings is never overwritten: by default it is moved into
/// `superseded/` (the message names the setting that differs) and the cell runs again; with
/// `--existing beside` it stays and the sweep writes under the next free name; a sweep of the
/// same settings resumes it. The summary lists every cell in the folder.
#[test]
fn cells_measured_otherwise_are_kept_aside_or_beside_never_overwritten() {
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sim.url();
    sweep(dir.path(), &["--base-url", &url]).assert().success();
    let first = std::fs::read(dir.path().join("t_tp2_isl64_osl8_conc1.json")).expect("cell");

    // A setting that changes what is measured (only burstiness, untouched by any check by name).
    let out = sweep(dir.path(), &["--base-url", &url, "--burstiness", "0.5"])
        .assert()
        .success();
    let log = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        log.contains("measured with other settings: burstiness was 1.0 and is now 0.5"),
        "{log}"
    );
    let superseded: Vec<PathBuf> = std::fs::read_dir(dir.path().join("superseded"))
        .expect("superseded folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let named = |suffix: &str| {
        superseded
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .count()
    };
    assert_eq!(
        (named(".json"), superseded.len()),
        (4, 8),
        "every earlier cell is kept, each with its per-request file: {superseded:?}"
    );
    for p in superseded
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".json"))
    {
        let requests = bench_result::requests::path_for(p);
        assert!(
            requests.is_file(),
            "{} beside {}",
            requests.display(),
            p.display()
        );
    }
    assert!(
        superseded
            .iter()
            .any(|p| std::fs::read(p).ok().as_deref() == Some(&first[..])),
        "byte for byte"
    );

    // Beside: the earlier files stay where they are, this sweep writes `t-2_...`, and runs again
    // with the same settings resume it.
    sweep(dir.path(), &["--base-url", &url, "--existing", "beside"])
        .assert()
        .success()
        .stderr(predicate::str::contains("`t-2_...`"));
    assert!(dir.path().join("t-2_tp2_isl64_osl8_conc1.json").is_file());
    sweep(dir.path(), &["--base-url", &url, "--existing", "beside"])
        .assert()
        .success();
    let rows = summary(dir.path());
    let of = |name: &str| rows.iter().filter(|r| r["name"] == name).count();
    assert_eq!(
        (of("t"), of("t-2")),
        (4, 4),
        "every cell in the folder: {rows:?}"
    );
    assert!(rows
        .iter()
        .filter(|r| r["name"] == "t-2")
        .all(|r| r["status"] == "skipped"));
    assert!(rows
        .iter()
        .filter(|r| r["name"] == "t")
        .all(|r| r["status"] == "earlier"));
    sims.stop(sim);
}

/// Waiting, as a user meets it: an explicit URL with nothing listening is an error within the
/// grace period, not an hour of retries; an empty server-info file is named as empty; SIGINT
/// while waiting exits 130.
#[test]
fn waiting_fails_fast_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let started = Instant::now();
    Command::from_std(sweep_process(
        &dir.path().join("r"),
        &["--base-url", &url, "--wait-timeout", "1h"],
    ))
    .assert()
    .code(1)
    .stderr(
        predicate::str::contains("nothing is listening at")
            .and(predicate::str::contains("refused")),
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a refused connection is not waited out for the hour"
    );

    let info = dir.path().join("server_info.txt");
    std::fs::write(&info, "\n").expect("write");
    Command::from_std(sweep_process(
        &dir.path().join("r"),
        &[
            "--server-info",
            &info.display().to_string(),
            "--wait-timeout",
            "1s",
        ],
    ))
    .assert()
    .code(1)
    .stderr(predicate::str::contains("the file stayed empty"));
}

#[cfg(unix)]
#[test]
fn sigint_while_waiting_exits_130() {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("never.txt");
    let mut child = sweep_process(
        &dir.path().join("r"),
        &[
            "--server-info",
            &info.display().to_string(),
            "--wait-timeout",
            "1h",
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawns");
    // Wait until it says it is waiting, then interrupt it.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let waiting = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("waiting for"));
    assert!(waiting, "it says what it waits for");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert_eq!(child.wait().expect("exits").code(), Some(130));
}

/// `--num-runs 2`: each cell twice, one after the other, each run its own file and prompts; the
/// summary lists both; a resumed sweep skips them.
#[test]
fn repeated_runs_get_files_of_their_own_and_resume_like_cells() {
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sim.url();
    let args = ["--base-url", url.as_str(), "--num-runs", "2"];
    sweep(dir.path(), &args)
        .assert()
        .success()
        .stderr(predicate::str::contains("conc 2 run 2"));
    let first = dir.path().join("t_tp2_isl64_osl8_conc2.json");
    let second = dir.path().join("t_tp2_isl64_osl8_conc2.run2.json");
    let seed = |p: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p).expect("a run's file")).expect("json");
        assert_eq!(v["completed"], 6, "{}", p.display());
        v["config"]["prompt"]["seed"].as_u64().expect("seed")
    };
    assert_ne!(
        seed(&first),
        seed(&second),
        "each run draws its own prompts"
    );
    let rows = summary(dir.path());
    let runs: Vec<(u64, u64, &str)> = rows
        .iter()
        .filter(|r| r["input_len"] == 64 && r["concurrency"] == 2)
        .map(|r| {
            let run = r["run"].as_u64().unwrap_or(0);
            (
                run,
                r["completed"].as_u64().unwrap_or(0),
                r["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(runs, [(1, 6, "done"), (2, 6, "done")]);
    assert_eq!(rows.len(), 8, "four cells, two runs each");
    let repeats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("t_tp2_isl64_osl8_conc2.repeats.json")).expect("intervals"),
    )
    .expect("json");
    assert_eq!(
        repeats["runs"],
        serde_json::json!([
            "t_tp2_isl64_osl8_conc2.json",
            "t_tp2_isl64_osl8_conc2.run2.json"
        ])
    );
    assert!(repeats["figures"]["output tok/s"]["mean"]
        .as_f64()
        .is_some());
    sweep(dir.path(), &args).assert().success();
    assert!(summary(dir.path()).iter().all(|r| r["status"] == "skipped"));
    sims.stop(sim);
}

/// A stall shows where a user looks for it: in the timeline drawn from a cell's per-request file,
/// intervals with a request in flight and not one token.
#[test]
fn a_stalled_stream_shows_in_the_timeline_as_tokens_stopping_with_a_request_in_flight() {
    let sims = Sims::new();
    // Every stream stalls once for 400 ms; otherwise a token every 5 ms.
    let sim = sims.start_with(5, |c| {
        c.faults.stall = 1.0;
        c.faults.stall_for = Duration::from_millis(400);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    // Each event's time, so the timeline counts tokens when they came.
    let url = sim.url();
    sweep(dir.path(), &["--base-url", &url, "--save-detailed"])
        .assert()
        .success();
    sims.stop(sim);
    let run = plot::load::read(&dir.path().join("t_tp2_isl64_osl8_conc1.json")).expect("a run");
    let detailed = plot::detail::read(&run).expect("its per-request file");
    // One request at a time, three of them: ~1.3 s in 12 intervals of ~110 ms, each stall
    // covering at least two whole ones (seven here; two with tokens spread over the decode).
    let panels = plot::detail::timeline(&detailed, 12);
    let in_flight = &panels[0].series[0].points;
    let rate = &panels[0].secondary.as_ref().expect("a rate axis").series[0].points;
    let stalled = in_flight
        .iter()
        .zip(rate)
        .filter(|(f, r)| f.1 > 0.99 && r.1 == 0.0)
        .count();
    assert!(
        stalled >= 5,
        "{stalled} stalled intervals: {in_flight:?} {rate:?}"
    );
}

/// One of two clients of a sweep against `url` (`--clients 2`), concurrency 2 and 4.
fn client_process(results: &Path, url: &str, index: &str) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("sweep"))
        .args([
            "--model",
            "sim-model",
            "--tokenizer",
            &tokenizer_dir(),
            "--name",
            "t",
        ])
        .args([
            "--tp",
            "2",
            "--input-lens",
            "64,128",
            "--concurrency",
            "2,4",
        ])
        .args(["--output-len", "8", "--prompts-per-concurrency", "3"])
        .args([
            "--warmups-per-concurrency",
            "1",
            "--disable-tqdm",
            "--results-dir",
        ])
        .arg(results)
        .args(["--base-url", url, "--clients", "2", "--client-index", index])
        .args(["--clients-id", "t1", "--wait-timeout", "60s"])
        .env_remove("SERVER_INFO_FILE")
        .env_remove("RESULTS_DIR")
        .env_remove("SLURM_PROCID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("a client starts")
}

/// The simulator's record of each request id, in order of arrival: every cell numbers its
/// requests from 0, so an id's k-th arrival is its k-th cell's.
type Arrivals = std::collections::HashMap<String, Vec<bench_sim::truth::RequestTruth>>;

fn arrivals(sim: &SimHandle) -> Arrivals {
    let mut truth = Arrivals::new();
    for t in sim.truth() {
        if let Some(id) = t.request_id.clone() {
            truth.entry(id).or_default().push(t);
        }
    }
    for each in truth.values_mut() {
        each.sort_by_key(|t| t.arrival);
    }
    truth
}

/// A merged cell: its figures are its union's, and each request is the simulator's.
fn check_merged_cell(
    file: &Path,
    conc: u64,
    truth: &Arrivals,
    seen: &mut std::collections::HashMap<String, usize>,
) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file).expect("the cell")).expect("json");
    assert_eq!(v["completed"], 3 * conc, "{}", file.display());
    assert_eq!(
        v["config"]["max_concurrency"], conc,
        "the whole cell's settings"
    );
    assert_eq!(v["clients"]["count"], 2);
    let each = v["clients"]["each"].as_array().expect("each client");
    let sent: Vec<u64> = each
        .iter()
        .map(|c| c["requests"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(sent, [3 * conc / 2, 3 * conc / 2], "each client's share");
    // The merged figures are the union's: from the per-request file of every request.
    let lines = bench_result::requests::read(&bench_result::requests::path_for(file))
        .expect("the merged per-request file");
    assert_eq!(lines.len() as u64, 3 * conc);
    let mut ttfts: Vec<f64> = lines.iter().filter_map(|l| l.ttft_ms).collect();
    ttfts.sort_by(f64::total_cmp);
    let median = (ttfts[ttfts.len() / 2 - 1] + ttfts[ttfts.len() / 2]) / 2.0;
    let reported = v["median_ttft_ms"].as_f64().expect("median TTFT");
    assert!((reported - median).abs() < 1e-6, "{reported} vs {median}");
    let tokens: u64 = lines.iter().map(|l| l.output_tokens).sum();
    assert_eq!(v["total_output_tokens"], tokens);
    // Request by request, what the simulator did: both clients' requests, every event it
    // handed over read, none measured before the simulator handed its first token over (within
    // the pairing of the kernel's wall-clock stamp with the monotonic clock, and the file's
    // microsecond rounding).
    let slack = bench_core::CONVERSION_ERROR.as_secs_f64() * 1e3 + 0.002;
    let mut clients = std::collections::BTreeSet::new();
    for l in &lines {
        clients.insert(l.request_id.split('-').nth(1).map(str::to_string));
        let k = seen.entry(l.request_id.clone()).or_default();
        let t = &truth[&l.request_id][*k];
        *k += 1;
        let handed: Vec<Instant> = t.output_sent().collect();
        assert_eq!(handed.len() as u64, l.events, "{}", l.request_id);
        let server_ttft = (handed[0] - t.arrival).as_secs_f64() * 1e3;
        let ttft = l.ttft_ms.expect("completed");
        assert!(
            ttft + slack >= server_ttft,
            "{}: {ttft} < {server_ttft}",
            l.request_id
        );
    }
    assert_eq!(clients.len(), 2, "{clients:?}");
}

/// Two client processes drive every cell together; client 0 merges.
#[test]
fn two_clients_drive_each_cell_and_the_merged_file_is_the_union_and_the_truth() {
    let sims = Sims::new();
    let sim = sims.start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let (zero, one) = (
        client_process(dir.path(), &sim.url(), "0"),
        client_process(dir.path(), &sim.url(), "1"),
    );
    let (zero, one) = (
        zero.wait_with_output().expect("client 0 ends"),
        one.wait_with_output().expect("client 1 ends"),
    );
    let log = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(zero.status.success(), "client 0: {}", log(&zero));
    assert!(one.status.success(), "client 1: {}", log(&one));
    assert_eq!(cell_files(dir.path()).len(), 4, "client 0 wrote every cell");
    let truth = arrivals(&sim);
    let mut seen = std::collections::HashMap::new();
    for isl in [64, 128] {
        for conc in [2u64, 4] {
            let file = dir
                .path()
                .join(format!("t_tp2_isl{isl}_osl8_conc{conc}.json"));
            check_merged_cell(&file, conc, &truth, &mut seen);
        }
    }
    // Every client's part is kept beside the results, one folder per cell.
    let kept = std::fs::read_dir(dir.path().join("clients"))
        .expect("the clients' folder")
        .count();
    assert_eq!(kept, 4);
    sims.stop(sim);
}

/// A serve job's topology beside its server-info file is recorded in every result; a serve job
/// at another TP than --tp is refused before any cell.
#[test]
fn the_serve_jobs_topology_is_recorded_and_a_tp_it_contradicts_refused() {
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("server_info.txt");
    std::fs::write(&info, format!("{}\n", sim.url())).expect("write");
    let topology = dir.path().join("server_info.txt.topology.json");
    let write = |tp: u32| {
        let t = serde_json::json!({"gpus": 2 * tp, "nodes": 1, "tp": tp, "pp": 1, "dp": 2,
            "expert_parallel": true});
        std::fs::write(&topology, t.to_string()).expect("write");
    };
    let info_arg = info.display().to_string();
    let results = dir.path().join("results");
    write(8);
    sweep(&results, &["--server-info", &info_arg])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--tp: 2, but the serve job says its server runs at tp 8",
        ));
    assert!(cell_files(&results).is_empty());
    write(2);
    sweep(&results, &["--server-info", &info_arg])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "server topology from its serve job: 4 GPUs",
        ));
    for name in cell_files(&results) {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(results.join(&name)).expect("cell"))
                .expect("json");
        assert_eq!(v["config"]["deployment"]["gpus"], 4, "{name}");
        assert_eq!(v["config"]["deployment"]["dp"], 2, "{name}");
        let output = v["output_throughput"].as_f64().expect("output");
        let per_gpu = v["per_gpu"]["output_throughput"].as_f64().expect("per GPU");
        assert!(
            (per_gpu * 4.0 - output).abs() < 1e-9 * output.max(1.0),
            "{name}"
        );
    }
    sims.stop(sim);
}

/// A client stopped while it waits for the others at a cell's start exits as after any signal,
/// and writes no cell: nothing of it was measured.
#[test]
fn a_client_stopped_while_waiting_for_the_others_exits_143_and_writes_nothing() {
    let sims = Sims::new();
    let sim = sims.start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("results");
    // Client 0 of two, whose partner never comes.
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("sweep"))
        .args([
            "--model",
            "sim-model",
            "--tokenizer",
            &tokenizer_dir(),
            "--name",
            "t",
        ])
        .args([
            "--input-lens",
            "64",
            "--concurrency",
            "2",
            "--output-len",
            "8",
        ])
        .args([
            "--base-url",
            &sim.url(),
            "--clients",
            "2",
            "--client-index",
            "0",
        ])
        .args([
            "--clients-id",
            "lonely",
            "--wait-timeout",
            "1h",
            "--results-dir",
        ])
        .arg(&results)
        .env_remove("SLURM_PROCID")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let barrier = results.join("clients/t_tp1_isl64_osl8_conc2.lonely/ready.0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !barrier.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(barrier.exists(), "client 0 reached the barrier");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cell_files(&results).is_empty());
    sims.stop(sim);
}
