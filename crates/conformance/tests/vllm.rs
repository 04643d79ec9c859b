//! inferperf against a real vLLM (0.32, CPU build, a tiny model with the test tokenizer), judged
//! by the server's own counters. Run by `conformance/run.sh`, which starts the server.

use conformance::{binary, number, read_json, run, tokenizer_dir, Vllm};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `bench` against the server with `extra` flags; returns the exit code, stderr and the result.
fn bench(vllm: &Vllm, dir: &Path, name: &str, extra: &[&str]) -> (Option<i32>, String, Value) {
    let result = dir.join(format!("{name}.json"));
    let tokenizer = tokenizer_dir();
    let mut cmd = binary("bench");
    cmd.args(["--base-url", &vllm.url, "--model", &vllm.model])
        .arg("--tokenizer")
        .arg(&tokenizer)
        .args(["--disable-tqdm", "--result-filepath"])
        .arg(&result)
        .args(extra);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let value = if result.is_file() {
        read_json(&result)
    } else {
        Value::Null
    };
    (out.status.code(), stderr, value)
}

const SMALL: &[&str] = &[
    "--random-input-len",
    "300",
    "--random-range-ratio",
    "0.2",
    "--random-output-len",
    "16",
    "--num-prompts",
    "8",
    "--max-concurrency",
    "4",
    "--num-warmups",
    "2",
    "--ignore-eos",
];

/// Prompts are as long as asked as the server counts them (every request's usage, and the
/// server's prompt counter over the run), and outputs exactly as asked with `--ignore-eos`:
/// the warm-up's too, as long as the measured requests' or `warmup_len` when given.
fn exact_lengths(endpoint: &str, warmup_len: Option<&str>) {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let before = vllm.metrics();
    let mut args = SMALL.to_vec();
    args.extend(["--endpoint", endpoint]);
    args.extend(warmup_len.iter().flat_map(|n| ["--warmup-output-len", *n]));
    let warmup_output: f64 = warmup_len.map_or(16.0, |n| n.parse().expect("a number"));
    let (code, log, r) = bench(&vllm, dir.path(), "exact", &args);
    let after = vllm.metrics();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        (number(&r, "/completed"), number(&r, "/failed")),
        (8.0, 0.0)
    );
    assert_eq!(number(&r, "/server_prompt_tokens/reported"), 8.0);
    assert_eq!(
        number(&r, "/server_prompt_tokens/mismatched"),
        0.0,
        "every request's usage.prompt_tokens is the client's count"
    );
    // The measured phase, by the server's counters as the result recorded them ...
    let input = number(&r, "/total_input_tokens");
    assert_eq!(number(&r, "/server/prompt_tokens"), input);
    assert_eq!(number(&r, "/total_output_tokens"), 8.0 * 16.0);
    assert_eq!(number(&r, "/server/generation_tokens"), 8.0 * 16.0);
    // ... and over the whole run (warm-up included) by scrapes the test took itself.
    let gen = before.delta(&after, "vllm:generation_tokens_total");
    assert_eq!(
        gen,
        8.0 * 16.0 + 2.0 * warmup_output,
        "measured and warm-up outputs"
    );
    let prompt = before.delta(&after, "vllm:prompt_tokens_total");
    let warmup_prompt = prompt - input;
    assert!(
        (2.0 * 240.0..=2.0 * 360.0).contains(&warmup_prompt),
        "two warm-up prompts of 240-360 tokens: {warmup_prompt}"
    );
    assert_eq!(number(&r, "/server/prefix_cache_hits"), 0.0);
    assert!(r
        .pointer("/server/ttft_mean_ms")
        .is_some_and(Value::is_number));
}

#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn completions_lengths_are_exact_as_the_server_counts_them() {
    exact_lengths("/v1/completions", None);
}

#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn chat_lengths_are_exact_as_the_server_counts_them_with_a_shorter_warm_up() {
    exact_lengths("/v1/chat/completions", Some("3"));
}

/// The same command twice: the second run's prompts share no prefix with the first's, by the
/// server's prefix-cache counters. With a repeated `--seed`, they do, and the result says so.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn repeated_runs_never_hit_the_prefix_cache_unless_seeded_alike() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["first", "second"] {
        let before = vllm.metrics();
        let (code, log, r) = bench(&vllm, dir.path(), name, SMALL);
        let after = vllm.metrics();
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(
            before.delta(&after, "vllm:prefix_cache_hits_total"),
            0.0,
            "{name} run"
        );
        assert!(before.delta(&after, "vllm:prefix_cache_queries_total") > 0.0);
        assert_eq!(number(&r, "/server/prefix_cache_hits"), 0.0);
    }
    let mut seeded = SMALL.to_vec();
    seeded.extend(["--seed", "77"]);
    let (_, log, _) = bench(&vllm, dir.path(), "seeded-1", &seeded);
    assert!(
        log.contains("--seed 77"),
        "a given seed is cautioned about: {log}"
    );
    let (code, log, r) = bench(&vllm, dir.path(), "seeded-2", &seeded);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        number(&r, "/server/prefix_cache_hits") > 0.0,
        "the same seed repeats the prompts, and the counters see it"
    );
    assert!(
        log.contains("prefix cache"),
        "the run says its prompts hit the cache: {log}"
    );
}

fn sweep(vllm: &Vllm, results: &Path) -> Command {
    let mut cmd = binary("sweep");
    cmd.args(["--base-url", &vllm.url, "--model", &vllm.model])
        .arg("--tokenizer")
        .arg(tokenizer_dir())
        .args([
            "--input-lens",
            "128,256",
            "--concurrency",
            "2,4",
            "--output-len",
            "8",
            "--prompts-per-concurrency",
            "2",
            "--warmups-per-concurrency",
            "1",
            "--name",
            "conf",
            "--disable-tqdm",
            "--results-dir",
        ])
        .arg(results);
    cmd
}

/// A whole sweep, interrupted and resumed: no cell, warm-up or attempt finds its prompts in the
/// prefix cache.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn a_sweep_and_its_resumption_never_hit_the_prefix_cache() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("results");
    let before = vllm.metrics();
    let mut child = sweep(&vllm, &results)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sweep starts");
    let cells = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().map(|n| n.to_string_lossy().to_string());
                        // Finished cells' result files, not attempts or per-request files.
                        n.is_some_and(|n| {
                            n.starts_with("conf_tp1_")
                                && n.ends_with(".json")
                                && !n.contains(".attempt")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while cells(&results).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let _ = child.wait();
    let out = run(&mut sweep(&vllm, &results));
    assert!(out.status.success());
    let after = vllm.metrics();
    let files = cells(&results);
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        let r = read_json(f);
        assert_eq!(
            number(&r, "/server/prefix_cache_hits"),
            0.0,
            "{}",
            f.display()
        );
        assert_eq!(
            number(&r, "/server/warmup_prefix_cache_hits"),
            0.0,
            "{}",
            f.display()
        );
    }
    assert_eq!(
        before.delta(&after, "vllm:prefix_cache_hits_total"),
        0.0,
        "no request of the sweep, its interrupted attempt or its resumption hit the cache"
    );
}

/// `--tokenizer org/name` from a Hugging Face cache laid out as the hub client writes it, with
/// downloads off.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn a_tokenizer_from_a_hugging_face_cache_layout() {
    let vllm = Vllm::from_env();
    let home = tempfile::tempdir().expect("tempdir");
    let repo = home.path().join("hub/models--inferperf--tiny-llama");
    let snapshot = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").expect("ref");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(vllm.model_dir.join(f), snapshot.join(f)).expect("copy");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("hf.json");
    let mut cmd = binary("bench");
    cmd.env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["--base-url", &vllm.url, "--model", &vllm.model])
        .args(["--tokenizer", "inferperf/tiny-llama", "--disable-tqdm"])
        .args(["--num-prompts", "4", "--random-input-len", "200"])
        .args([
            "--random-output-len",
            "4",
            "--ignore-eos",
            "--result-filepath",
        ])
        .arg(&result);
    let out = run(&mut cmd);
    assert!(out.status.success());
    let r = read_json(&result);
    assert_eq!(number(&r, "/server_prompt_tokens/mismatched"), 0.0);
    assert_eq!(number(&r, "/completed"), 4.0);
}

/// A prompt longer than the model's context: every request fails with vLLM's 400 and its
/// message, and the run says what to do.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn a_prompt_longer_than_the_context_is_named() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--random-input-len",
        "33000",
        "--num-prompts",
        "2",
        "--random-output-len",
        "4",
    ];
    let (code, log, r) = bench(&vllm, dir.path(), "long", &args);
    assert_eq!(code, Some(1), "every request failed: {log}");
    assert_eq!(number(&r, "/failures/http_400/count"), 2.0);
    let example = r["failures"]["http_400"]["example"].as_str().unwrap_or("");
    assert!(example.contains("32768"), "vLLM's own message: {example}");
    assert!(
        log.contains("--random-input-len"),
        "the way out is named: {log}"
    );
}

/// A model name the server does not serve: 404, and the run names the ones it does.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn a_model_the_server_does_not_serve_is_named_with_the_ones_it_does() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("nope.json");
    let mut cmd = binary("bench");
    cmd.args(["--base-url", &vllm.url, "--model", "no-such-model"])
        .arg("--tokenizer")
        .arg(tokenizer_dir())
        .args([
            "--num-prompts",
            "2",
            "--random-input-len",
            "64",
            "--disable-tqdm",
        ])
        .args(["--random-output-len", "4", "--result-filepath"])
        .arg(&result);
    let out = run(&mut cmd);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let r = read_json(&result);
    assert_eq!(number(&r, "/failures/http_404/count"), 2.0);
    assert!(
        log.contains(&vllm.model) && log.contains("--model"),
        "the served model is named: {log}"
    );
}

/// `vllm bench serve`'s own result files, written against the real server, load in `plot` as
/// ours do: every chart kind.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn vllm_bench_serve_results_plot_like_ours() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    for conc in [1, 2] {
        vllm_bench_serve(&vllm, &vllm.url, dir.path(), conc);
    }
    let charts = dir.path().join("charts");
    let out = run(binary("plot")
        .args(["--kind", "all", "--results-dir"])
        .arg(dir.path())
        .arg("--output")
        .arg(charts.join("vllm.png")));
    assert!(out.status.success());
    for kind in ["throughput", "sla", "pareto", "latency"] {
        assert!(
            charts.join(format!("vllm_{kind}.png")).is_file(),
            "{kind} chart"
        );
    }
}

/// `vllm bench serve` against `bench-sim` runs as against vLLM: every request completes and
/// the file has what vLLM writes.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn vllm_bench_serve_is_served_by_the_simulator_as_by_vllm() {
    let vllm = Vllm::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sim = runtime.block_on(async {
        let mut cfg = bench_sim::SimConfig::preset(&vllm.model, "small-tp1").expect("preset");
        cfg.tokenizer = Some(tokenizer_dir());
        cfg.max_model_len = 32768;
        bench_sim::Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator starts")
    });
    let real = vllm_bench_serve(&vllm, &vllm.url, &dir.path().join("real"), 2);
    let simulated = vllm_bench_serve(&vllm, &sim.url(), &dir.path().join("sim"), 2);
    runtime.block_on(sim.stop());
    assert_eq!(number(&simulated, "/completed"), 8.0);
    assert_eq!(number(&simulated, "/total_output_tokens"), 8.0 * 8.0);
    assert_eq!(
        number(&simulated, "/total_input_tokens"),
        number(&real, "/total_input_tokens"),
        "both count the same prompts the same way"
    );
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&simulated), keys(&real), "the same file, key for key");
}

/// Runs `vllm bench serve` against `url` with 4 prompts per slot at concurrency `conc`, named
/// by the sweep rule; returns its result.
fn vllm_bench_serve(vllm: &Vllm, url: &str, dir: &Path, conc: u32) -> Value {
    std::fs::create_dir_all(dir).expect("mkdir");
    let name = format!("vllmbench_tp1_isl128_osl8_conc{conc}.json");
    let prompts = (4 * conc).to_string();
    let out = run(Command::new(&vllm.bin)
        .env("HF_HUB_OFFLINE", "1")
        .args(["bench", "serve", "--backend", "vllm", "--base-url", url])
        .args(["--endpoint", "/v1/completions", "--model", &vllm.model])
        .arg("--tokenizer")
        .arg(&vllm.model_dir)
        .args(["--dataset-name", "random", "--random-input-len", "128"])
        .args([
            "--random-output-len",
            "8",
            "--ignore-eos",
            "--num-prompts",
            &prompts,
        ])
        .args(["--max-concurrency", &conc.to_string(), "--save-result"])
        .args(["--percentile-metrics", "ttft,tpot,itl,e2el"])
        .arg("--result-dir")
        .arg(dir)
        .args(["--result-filename", &name]));
    assert!(out.status.success(), "vllm bench serve against {url}");
    read_json(&dir.join(name))
}

/// The server goes away mid-run (its connections cut, new ones refused): every request still
/// in flight or not yet sent fails with its reason, the run ends, its file is written, and the
/// run says what happened.
#[test]
#[ignore = "needs a vLLM server: conformance/run.sh"]
fn a_server_that_goes_away_mid_run_is_counted_and_named() {
    let vllm = Vllm::from_env();
    let proxy = conformance::CutProxy::start(vllm.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("gone.json");
    let before = vllm.metrics();
    let child = binary("bench")
        .args(["--base-url", &proxy.url, "--model", &vllm.model])
        .arg("--tokenizer")
        .arg(tokenizer_dir())
        .args([
            "--num-prompts",
            "40",
            "--max-concurrency",
            "2",
            "--disable-tqdm",
        ])
        .args([
            "--random-input-len",
            "64",
            "--random-output-len",
            "64",
            "--ignore-eos",
        ])
        .arg("--result-filepath")
        .arg(&result)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bench starts");
    // Once the server has finished a few of them (by its own count), take it away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while before.delta(&vllm.metrics(), "vllm:request_success_total") < 4.0 {
        assert!(std::time::Instant::now() < deadline, "no request finished");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    proxy.cut();
    let out = child.wait_with_output().expect("bench ends");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    let r = read_json(&result);
    let completed = number(&r, "/completed");
    let failed = number(&r, "/failed");
    assert_eq!(completed + failed, 40.0, "every request is accounted for");
    assert!(
        completed > 0.0 && failed > 0.0,
        "{completed} completed, {failed} failed"
    );
    let reasons: Vec<&String> = r["failures"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(
        reasons
            .iter()
            .all(|k| ["stream_cut", "connect"].contains(&k.as_str())),
        "{reasons:?}"
    );
    assert!(
        log.contains("could not connect") || log.contains("cut"),
        "the run says the server went away: {log}"
    );
}
