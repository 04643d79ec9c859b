//! The `bench` binary as a user runs it: flags, exit codes, result files, signals.

mod support;

use support::{tokenizer_dir, Sim};

use assert_cmd::Command;
use predicates::prelude::*;
use std::time::Duration;

fn bench(url: &str, out: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("bench").expect("binary");
    cmd.args([
        "--model",
        "sim-model",
        "--tokenizer",
        &tokenizer_dir(),
        "--base-url",
        url,
    ])
    .args([
        "--random-input-len",
        "64",
        "--random-output-len",
        "8",
        "--num-prompts",
        "6",
    ])
    .arg("--result-filepath")
    .arg(out)
    .args(extra)
    .env_remove("OPENAI_API_KEY");
    cmd
}

fn read(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("result file")).expect("json")
}

#[test]
fn help_explains_every_flag() {
    let out = Command::cargo_bin("bench")
        .expect("binary")
        .arg("--help")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--tokenizer",
        "--base-url",
        "--endpoint",
        "--random-input-len",
        "--random-output-len",
        "--random-range-ratio",
        "--random-prefix-len",
        "--num-prompts",
        "--max-concurrency",
        "--num-warmups",
        "--warmup-output-len",
        "--request-rate",
        "--burstiness",
        "--seed",
        "--ignore-eos",
        "--goodput",
        "--metadata",
        "--result-filepath",
        "--disable-tqdm",
        "--percentiles",
        "--save-detailed",
        "--request-timeout",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_values_exit_2_naming_the_flag_before_sending_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r.json");
    for (args, flag) in [
        (vec!["--random-range-ratio", "1.5"], "--random-range-ratio"),
        (vec!["--max-concurrency", "0"], "--max-concurrency"),
        (vec!["--random-input-len", "-3"], "--random-input-len"),
        (vec!["--ca-cert", "/nonexistent/ca.pem"], "--ca-cert"),
        (vec!["--ca-cert", "Cargo.toml"], "--ca-cert"),
    ] {
        bench("http://127.0.0.1:9", &out, &args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(flag));
    }
    bench("not-a-url", &out, &[])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--base-url"));
    Command::cargo_bin("bench")
        .expect("binary")
        .args(["--tokenizer", "/nonexistent/tok.json", "--result-filepath"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--tokenizer")
                .and(predicate::str::contains("/nonexistent/tok.json")),
        );
    assert!(!out.exists(), "nothing was measured, nothing written");
}

#[test]
fn a_run_writes_a_result_the_old_plotter_can_read() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run.json");
    bench(
        &sim.url(),
        &out,
        &[
            "--max-concurrency",
            "3",
            "--num-warmups",
            "2",
            "--ignore-eos",
            "--metadata",
            "tp=4",
            "--disable-tqdm",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("Serving Benchmark Result"))
    .stdout(predicate::str::contains(
        "Successful requests:                     6",
    ));
    let v = read(&out);
    for key in [
        "median_ttft",
        "p99_tpot",
        "output_throughput",
        "input_throughput",
        "max_concurrency",
        "completed",
        "date",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["tp"], 4);
    assert_eq!(v["warmup"]["requests"], 2);
    assert_eq!(v["total_output_tokens"], 48);
}

/// `--warmup-output-len`: the server's own counter of generated tokens is the judge of what the
/// warm-up asked for; the measured requests still ask for the output length.
#[test]
fn warm_up_requests_ask_for_the_warm_up_output_length() {
    for (warmup_len, expected) in [(None, 8), (Some("1"), 1)] {
        let sim = Sim::start(|_| {});
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run.json");
        let mut extra = vec!["--num-warmups", "2", "--ignore-eos", "--disable-tqdm"];
        extra.extend(warmup_len.iter().flat_map(|n| ["--warmup-output-len", *n]));
        bench(&sim.url(), &out, &extra).assert().success();
        let v = read(&out);
        assert_eq!(v["total_output_tokens"], 6 * 8);
        assert_eq!(v["warmup"]["completed"], 2);
        let echoed = warmup_len.map(|n| serde_json::json!(n.parse::<u64>().expect("a number")));
        assert_eq!(v["config"].get("warmup_output_len"), echoed.as_ref());
        let generated = sim
            .handle
            .as_ref()
            .expect("running")
            .stats()
            .generation_tokens_total
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(generated, 6 * 8 + 2 * expected, "warm-up of {warmup_len:?}");
    }
}

#[test]
fn every_request_failing_exits_1_and_still_writes_the_file() {
    let sim = Sim::start(|c| c.faults.http_500 = 1.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fail.json");
    bench(&sim.url(), &out, &["--disable-tqdm"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("http_500"));
    let v = read(&out);
    assert_eq!(v["completed"], 0);
    assert_eq!(v["failed"], 6);
    assert_eq!(v["failures"]["http_500"]["count"], 6);
}

#[cfg(unix)]
#[test]
fn sigterm_writes_an_interrupted_result_and_exits_143() {
    let sim = Sim::start(|c| {
        c.timing = bench_sim::timing::Timing::Fixed {
            ttft: Duration::from_millis(50),
            itl: Duration::from_millis(50),
        };
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("int.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bench"))
        .args([
            "--model",
            "sim-model",
            "--tokenizer",
            &tokenizer_dir(),
            "--base-url",
            &sim.url(),
        ])
        .args([
            "--random-input-len",
            "64",
            "--num-prompts",
            "200",
            "--max-concurrency",
            "2",
        ])
        .args([
            "--random-output-len",
            "40",
            "--disable-tqdm",
            "--result-filepath",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    // Signalled once the first requests have finished at the server, whatever the machine's pace.
    let finished = || sim.handle.as_ref().map_or(0, |h| h.truth().len());
    let waiting = std::time::Instant::now();
    while finished() < 2 {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "no request finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(143));
    let v = read(&out);
    assert_eq!(v["interrupted"], true);
    assert!(v["not_sent"].as_u64().unwrap_or(0) > 0);
}

/// A result path that cannot be written is refused before the first request, so no measurement
/// is thrown away at the end.
#[test]
fn an_unwritable_result_path_is_refused_before_any_request() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    bench(&sim.url(), dir.path(), &["--disable-tqdm"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--result-filepath")
                .and(predicate::str::contains("is a folder")),
        );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    bench(&sim.url(), &file.join("r.json"), &["--disable-tqdm"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--result-filepath")
                .and(predicate::str::contains("cannot write")),
        );
    let truth = sim
        .handle
        .as_ref()
        .map(|h| h.truth().len())
        .unwrap_or_default();
    assert_eq!(truth, 0, "the server received nothing");
}

/// The library's warnings reach the user: a `--metadata` key that clashes with a result key is
/// warned about by bench-core through `tracing`, and the line is on stderr.
#[test]
fn a_library_warning_reaches_stderr() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    bench(
        &sim.url(),
        &dir.path().join("r.json"),
        &["--disable-tqdm", "--metadata", "median_ttft=mine"],
    )
    .assert()
    .success()
    .stderr(predicate::str::contains(
        "--metadata median_ttft=... not written at top level",
    ));
}

/// A concurrency the open-file limit cannot hold is refused before the first request, with the
/// way to raise the limit, rather than failing requests midway as the server's fault.
#[cfg(unix)]
#[test]
fn a_concurrency_beyond_the_open_file_limit_is_refused_before_any_request() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = assert_cmd::cargo::cargo_bin("bench");
    let tokenizer = tokenizer_dir();
    let out = dir.path().join("r.json").display().to_string();
    let url = sim.url();
    Command::new("sh")
        .args(["-c", r#"ulimit -n 200 && exec "$@""#, "sh"])
        .arg(&bench)
        .args([
            "--model",
            "sim-model",
            "--tokenizer",
            &tokenizer,
            "--base-url",
            &url,
        ])
        .args(["--random-input-len", "16", "--random-output-len", "2"])
        .args(["--num-prompts", "1000", "--max-concurrency", "1000"])
        .args(["--disable-tqdm", "--result-filepath", &out])
        .env_remove("OPENAI_API_KEY")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("1000 requests in flight need about 1064 open files")
                .and(predicate::str::contains("at most 200"))
                .and(predicate::str::contains("ulimit -n 1064")),
        );
    let truth = sim
        .handle
        .as_ref()
        .map(|h| h.truth().len())
        .unwrap_or_default();
    assert_eq!(truth, 0, "the server received nothing");
}

/// The result's folder replaced by a file during the run: the measurement is written to a
/// temporary file, the message says where, and the exit code says something went wrong.
#[cfg(unix)]
#[test]
fn a_result_that_cannot_be_written_at_the_end_goes_to_a_temporary_file() {
    use std::io::BufRead;
    let sim = Sim::start(|c| {
        c.timing = bench_sim::timing::Timing::Fixed {
            ttft: Duration::from_millis(50),
            itl: Duration::from_millis(100),
        };
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("results");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bench"))
        .args(["--model", "sim-model", "--tokenizer", &tokenizer_dir()])
        .args(["--base-url", &sim.url(), "--disable-tqdm"])
        .args(["--random-input-len", "16", "--random-output-len", "20"])
        .args(["--num-prompts", "4", "--max-concurrency", "2"])
        .arg("--result-filepath")
        .arg(folder.join("r.json"))
        .env_remove("OPENAI_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bench starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        let sending = line.starts_with("sending to");
        seen.push(line);
        if sending {
            break;
        }
    }
    // The requests take about 4 s; the folder goes away now, and a file takes its name.
    std::fs::remove_dir_all(&folder).expect("remove the folder");
    std::fs::write(&folder, "in the way").expect("a file in its place");
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("exits");
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let rescue = stderr
        .split("the result is in ")
        .nth(1)
        .and_then(|rest| rest.split(" instead").next())
        .unwrap_or_else(|| panic!("no rescue path in: {stderr}"));
    let v = read(std::path::Path::new(rescue));
    assert_eq!(v["completed"], 4, "the whole measurement is there");
    std::fs::remove_file(rescue).expect("clean up");
}

#[test]
fn the_deployment_is_recorded_and_per_gpu_figures_divide_by_its_gpus() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run.json");
    bench(
        &sim.url(),
        &out,
        &[
            "--tp",
            "4",
            "--dp",
            "2",
            "--expert-parallel",
            "--deployment",
            "dp2-ep",
            "--disable-tqdm",
        ],
    )
    .assert()
    .success();
    let v = read(&out);
    assert_eq!(
        v["config"]["deployment"],
        serde_json::json!({"name": "dp2-ep", "gpus": 8, "nodes": 1, "pp": 1, "dp": 2, "expert_parallel": true})
    );
    let output = v["output_throughput"].as_f64().expect("output throughput");
    let per_gpu = v["per_gpu"]["output_throughput"].as_f64().expect("per GPU");
    assert!(output > 0.0);
    assert_eq!(
        per_gpu,
        output / 8.0,
        "tp 4 x dp 2 = 8 GPUs, not the TP's 4"
    );
    // Without deployment flags there is no deployment, and per GPU is per TP rank.
    let plain = dir.path().join("plain.json");
    bench(&sim.url(), &plain, &["--tp", "4", "--disable-tqdm"])
        .assert()
        .success();
    let v = read(&plain);
    assert!(v["config"].get("deployment").is_none(), "{}", v["config"]);
    assert_eq!(
        v["per_gpu"]["output_throughput"].as_f64().expect("per GPU"),
        v["output_throughput"].as_f64().expect("output") / 4.0
    );
}

#[test]
fn every_request_has_a_line_in_the_file_beside_the_result() {
    let sim = Sim::start(|c| c.faults.http_500 = 0.3);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run.json");
    bench(
        &sim.url(),
        &out,
        &[
            "--max-concurrency",
            "2",
            "--save-detailed",
            "--disable-tqdm",
        ],
    )
    .assert()
    .stderr(predicate::str::contains("run.requests.jsonl"));
    let v = read(&out);
    let text = std::fs::read_to_string(dir.path().join("run.requests.jsonl")).expect("the file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(lines.len(), 6, "one line per measured request");
    // In the order sent, from the first send.
    let sent: Vec<f64> = lines
        .iter()
        .map(|l| l["sent_s"].as_f64().expect("sent_s"))
        .collect();
    assert_eq!(sent[0], 0.0);
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    let ok: Vec<&serde_json::Value> = lines.iter().filter(|l| l["ok"] == true).collect();
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["ok"] == false).collect();
    assert_eq!(ok.len() as u64, v["completed"].as_u64().expect("completed"));
    for l in &failed {
        assert_eq!(l["reason"], "http_500");
        assert!(l["ttft_ms"].is_null());
    }
    // The lines' figures are the ones the result summarises.
    let mut ttfts: Vec<f64> = ok
        .iter()
        .map(|l| l["ttft_ms"].as_f64().expect("ttft"))
        .collect();
    ttfts.sort_by(f64::total_cmp);
    assert_eq!(ttfts[0], v["distributions_ms"]["ttft"]["min"]);
    assert_eq!(ttfts[ttfts.len() - 1], v["distributions_ms"]["ttft"]["max"]);
    for l in &ok {
        assert_eq!(l["output_tokens"], 8);
        let events = l["event_ms"]
            .as_array()
            .expect("--save-detailed adds event times");
        assert_eq!(events.len() as u64, l["events"].as_u64().expect("events"));
        assert_eq!(
            events[0], l["ttft_ms"],
            "the first event is the first token"
        );
        let request_id = l["request_id"].as_str().expect("request id");
        assert!(request_id.starts_with("inferperf-"), "{request_id}");
    }
}

#[test]
fn repeated_runs_each_get_their_own_prompts_and_file_then_intervals() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r.json");
    bench(
        &sim.url(),
        &out,
        &[
            "--num-runs",
            "3",
            "--max-concurrency",
            "2",
            "--disable-tqdm",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains(
        "3 runs: mean and 95% interval (Student's t)",
    ))
    .stdout(predicate::str::contains("output tok/s"));
    let files = ["r.json", "r.run2.json", "r.run3.json"];
    let seeds: std::collections::BTreeSet<u64> = files
        .iter()
        .map(|f| {
            let v = read(&dir.path().join(f));
            assert_eq!(v["completed"], 6, "{f}");
            let requests = dir.path().join(f.replace(".json", ".requests.jsonl"));
            assert!(requests.is_file(), "{}", requests.display());
            v["config"]["prompt"]["seed"].as_u64().expect("a seed")
        })
        .collect();
    assert_eq!(seeds.len(), 3, "each run draws its own prompts");
    // The intervals, beside the first run, naming the runs.
    let summary = read(&dir.path().join("r.repeats.json"));
    assert_eq!(summary["runs"], serde_json::json!(files));
    assert_eq!(summary["method"], "student_t");
    let output = &summary["figures"]["output tok/s"];
    let (low, mean, high) = (
        output["low"].as_f64().expect("low"),
        output["mean"].as_f64().expect("mean"),
        output["high"].as_f64().expect("high"),
    );
    assert!(low <= mean && mean <= high, "{output}");
    let mean_of_runs = files
        .iter()
        .map(|f| {
            read(&dir.path().join(f))["output_throughput"]
                .as_f64()
                .expect("figure")
        })
        .sum::<f64>()
        / 3.0;
    assert!((mean - mean_of_runs).abs() < 1e-9);
    bench(&sim.url(), &out, &["--num-runs", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--num-runs"));
}
