//! Shared helpers: fixtures, a simulator on port 0, and a run driven in-process.

use bench_core::config::TransportKind;
use bench_core::progress::ProgressMode;
use bench_core::tokenizer::PromptTokenizer;
use bench_core::{RunConfig, RunReport};
use bench_sim::{SimConfig, SimHandle, Simulator};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

pub fn tokenizer_dir() -> PathBuf {
    testdata().join("tokenizers/deepseek-v4")
}

/// The real 128k tokenizer, loaded once per test binary.
pub fn tokenizer() -> Arc<PromptTokenizer> {
    static TOK: OnceLock<Arc<PromptTokenizer>> = OnceLock::new();
    Arc::clone(TOK.get_or_init(|| {
        Arc::new(PromptTokenizer::from_path(&tokenizer_dir()).expect("fixture tokenizer loads"))
    }))
}

/// A simulator on 127.0.0.1:0 with fixed timing (ttft, itl in ms) and its tokenizer.
pub async fn fixed_sim(ttft_ms: u64, itl_ms: u64, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::preset("sim-model", "fixed").expect("preset");
    cfg.timing = bench_sim::timing::Timing::Fixed {
        ttft: std::time::Duration::from_millis(ttft_ms),
        itl: std::time::Duration::from_millis(itl_ms),
    };
    cfg.tokenizer = Some(tokenizer_dir());
    tweak(&mut cfg);
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// Both transports, for tests that hold each to the same outcome.
pub const TRANSPORTS: [TransportKind; 2] = [TransportKind::Native, TransportKind::Standard];

/// A small run configuration against `url`.
pub fn config(url: &str, prompts: usize, input_len: u64, output_len: u64) -> RunConfig {
    let url = url.parse().expect("a base URL");
    let mut c = RunConfig::new("sim-model", &tokenizer_dir().display().to_string(), url);
    c.num_prompts = prompts;
    c.prompt.input_len = input_len;
    c.output_len = output_len;
    c
}

/// Prepares and executes `config` in-process.
pub async fn run(config: &RunConfig) -> RunReport {
    run_with(config, &CancellationToken::new()).await
}

pub async fn run_with(config: &RunConfig, stop: &CancellationToken) -> RunReport {
    let prepared = bench_core::prepare(config, tokenizer())
        .await
        .expect("prompts build");
    bench_core::execute(config, &prepared, stop, ProgressMode::Off)
        .await
        .expect("run executes")
}

/// Mean TPOT the simulator actually gave the completed requests, from its hand-over times.
pub fn truth_tpot_ms(report: &RunReport, sim: &SimHandle) -> f64 {
    let truth: std::collections::HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| t.request_id.clone().map(|id| (id, t)))
        .collect();
    let tpots: Vec<f64> = report
        .records
        .iter()
        .filter_map(|r| {
            let sent: Vec<std::time::Instant> = truth[&r.request_id].output_sent().collect();
            let (first, last) = (sent.first()?, sent.last()?);
            let tokens = r.output_tokens.checked_sub(1).filter(|n| *n > 0)?;
            Some((*last - *first).as_secs_f64() * 1e3 / tokens as f64)
        })
        .collect();
    tpots.iter().sum::<f64>() / tpots.len().max(1) as f64
}

/// What events that shared a read may add to a run's mean TPOT: one gap of `itl_ms` spread over
/// a request's `gaps`, when any did (the earlier event carries the later one's stamp).
pub fn shared_read_allowance_ms(report: &RunReport, itl_ms: f64, gaps: f64) -> f64 {
    if report.metrics.events_sharing_a_read == 0 {
        0.0
    } else {
        itl_ms / gaps
    }
}
