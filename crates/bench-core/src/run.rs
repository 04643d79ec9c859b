//! One benchmark run, start to finish: tokenizer, prompts, warm-up, measured phase, figures.
//!
//! Binaries call [`prepare`] then [`execute`]; a sweep prepares its tokenizer once and reuses it
//! for every cell.

use crate::client::Client;
use crate::config::{RequestRate, RunConfig};
use crate::metrics::{self, RunMetrics};
use crate::overhead::{self, LagProbe};
use crate::progress::{Progress, ProgressMode};
use crate::prompt::{self, PromptRole, PromptStats};
use crate::record::RequestRecord;
use crate::request::{self, RequestPlan};
use crate::runner::{self, Driver};
pub use crate::server_metrics::ServerReport;
use crate::server_metrics::{RunScrapes, Scraper};
use crate::tokenizer::{HubSettings, PromptTokenizer, TokenizerError};
use crate::transport::ReadStats;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a run could not start. Request failures are not errors: they are measured.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("prompt building stopped: {0}")]
    Join(String),
}

/// Warm-up phase figures.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupSummary {
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    pub seconds: f64,
}

/// The client's own cost during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ClientOverhead {
    pub cpu_seconds: Option<f64>,
    /// CPU seconds per wall second; `cores` is the ceiling.
    pub cpu_utilization: Option<f64>,
    pub cores: usize,
    pub cpu_seconds_per_100k_events: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// How late the runtime woke a timer: the delay between data being readable and being
    /// timestamped when the client is busy.
    pub runtime_lag_p50_ms: f64,
    pub runtime_lag_p99_ms: f64,
    pub runtime_lag_max_ms: f64,
    /// Where event timestamps came from: `kernel` (arrival times the kernel recorded), `read`
    /// (when each read returned), or `mixed`.
    pub timestamps: &'static str,
    /// How long arrived data waited in the socket before the client read it (kernel-stamped reads
    /// only): a read-time stamp would have been late by this much.
    pub read_wait_p50_ms: Option<f64>,
    pub read_wait_p99_ms: Option<f64>,
    pub read_wait_max_ms: Option<f64>,
    /// True when the client, not the server, probably limited the run.
    pub client_bound: bool,
    pub warnings: Vec<String>,
}

/// The machine the client ran on.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cores: usize,
}

impl SystemInfo {
    pub fn current() -> Self {
        Self {
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_default(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cores: cores(),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunReport {
    pub config: RunConfig,
    pub started_at: chrono::DateTime<chrono::Local>,
    pub prompt_stats: PromptStats,
    pub warmup: Option<WarmupSummary>,
    pub metrics: RunMetrics,
    pub records: Vec<RequestRecord>,
    pub interrupted: bool,
    pub not_sent: usize,
    pub client: ClientOverhead,
    /// What the server's own `/metrics` said of the measured phase.
    pub server: ServerReport,
    /// The models the server serves, asked when requests failed with HTTP 404.
    pub served_models: Option<Vec<String>>,
    pub system: SystemInfo,
}

/// Requests built and ready: what [`execute`] sends.
#[derive(Debug)]
pub struct Prepared {
    pub tokenizer: Arc<PromptTokenizer>,
    pub measured: Arc<Vec<RequestPlan>>,
    pub warmups: Arc<Vec<RequestPlan>>,
    pub prompt_stats: PromptStats,
}

/// Loads the tokenizer named by the configuration.
pub async fn load_tokenizer(config: &RunConfig) -> Result<Arc<PromptTokenizer>, RunError> {
    let hub = HubSettings::from_env();
    Ok(Arc::new(
        PromptTokenizer::resolve(&config.tokenizer, &hub).await?,
    ))
}

/// Builds measured and warm-up prompts (on every core, off the async threads).
pub async fn prepare(
    config: &RunConfig,
    tokenizer: Arc<PromptTokenizer>,
) -> Result<Prepared, RunError> {
    let (cfg, tok) = (config.clone(), Arc::clone(&tokenizer));
    let built = tokio::task::spawn_blocking(move || {
        let (measured, stats) =
            prompt::build(&tok, &cfg.prompt, PromptRole::Measured, cfg.num_prompts)?;
        let (warm, _) = prompt::build(&tok, &cfg.prompt, PromptRole::Warmup, cfg.num_warmups)?;
        Ok::<_, TokenizerError>((
            request::plans(&cfg, &measured, 'm'),
            request::plans(&cfg, &warm, 'w'),
            stats,
        ))
    })
    .await
    .map_err(|e| RunError::Join(e.to_string()))??;
    Ok(Prepared {
        tokenizer,
        measured: Arc::new(built.0),
        warmups: Arc::new(built.1),
        prompt_stats: built.2,
    })
}

/// Warm-up, then the measured phase, then the figures. `stop` ends the run early; what was
/// measured until then is still reported, marked interrupted.
pub async fn execute(
    config: &RunConfig,
    prepared: &Prepared,
    stop: &CancellationToken,
    progress: ProgressMode,
) -> Result<RunReport, RunError> {
    let started_at = chrono::Local::now();
    let client = Client::new(
        &config.url(),
        config.endpoint.api,
        config.api_key.clone(),
        config.request_timeout,
        config.ca_cert.as_deref(),
    )
    .map_err(|e| RunError::Client(e.to_string()))?;
    let driver = Driver {
        max_concurrency: config.max_concurrency,
        rate: config.request_rate,
        burstiness: config.burstiness,
        seed: config.prompt.seed,
        grace: config.interrupt_grace,
    };
    let server_probe = Scraper::new(&config.base_url, config.ca_cert.as_deref()).ok();
    let mut scrapes = RunScrapes::new(server_probe.clone(), config.server_metrics_interval);
    if !prepared.warmups.is_empty() {
        scrapes.before_warmup().await;
    }
    let warmup = if prepared.warmups.is_empty() || stop.is_cancelled() {
        None
    } else {
        Some(warm_up(&client, prepared, &driver, stop, &progress).await)
    };
    scrapes.measured_starts().await;
    let measured = measure(&client, prepared, &driver, stop, &progress).await;
    let mut server = scrapes.measured_ended().await;

    let metrics = figures(config, &measured.phase.records);
    let client_overhead = judge_client(
        measured.cpu_seconds,
        measured.wall.as_secs_f64(),
        &measured.lag,
        &measured.reads,
        &metrics,
    );
    let served_models = match (&server_probe, metrics.failures.contains_key("http_404")) {
        (Some(s), true) => s.models(config.api_key.as_deref()).await,
        _ => None,
    };
    server.warnings = crate::judge::server(config, &server, &metrics);
    let phase = measured.phase;
    Ok(RunReport {
        config: config.clone(),
        started_at,
        prompt_stats: prepared.prompt_stats.clone(),
        warmup,
        metrics,
        records: phase.records,
        interrupted: stop.is_cancelled(),
        not_sent: phase.not_sent,
        client: client_overhead,
        server,
        served_models,
        system: SystemInfo::current(),
    })
}

/// The measured phase and what it cost the client.
struct Measured {
    phase: runner::PhaseOutcome,
    cpu_seconds: Option<f64>,
    wall: std::time::Duration,
    lag: crate::stats::Distribution,
    reads: ReadStats,
}

async fn measure(
    client: &Client,
    prepared: &Prepared,
    driver: &Driver,
    stop: &CancellationToken,
    progress: &ProgressMode,
) -> Measured {
    let bar = Progress::new("measured", prepared.measured.len(), progress);
    // Warm-up reads are not the measured phase's.
    let _ = client.take_read_stats();
    let probe = LagProbe::start();
    let (cpu0, wall0) = (overhead::cpu_time(), Instant::now());
    let phase = runner::drive(
        client,
        &prepared.measured,
        driver,
        &prepared.tokenizer,
        stop,
        &bar,
    )
    .await;
    let (cpu1, wall) = (overhead::cpu_time(), wall0.elapsed());
    let lag = probe.stop();
    let reads = client.take_read_stats();
    bar.finish();
    Measured {
        phase,
        cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| (b - a).as_secs_f64()),
        wall,
        lag,
        reads,
    }
}

/// Every figure of the measured phase, and the closed loop's turnarounds when there is one.
fn figures(config: &RunConfig, records: &[RequestRecord]) -> RunMetrics {
    let percentiles = with_required(&config.percentiles);
    let mut metrics = metrics::compute(records, &percentiles, &config.goodput, config.ignore_eos);
    if let (Some(slots), RequestRate::Infinite) = (config.max_concurrency, config.request_rate) {
        let gaps = metrics::turnarounds(records, slots.get());
        metrics.turnaround_ms = (!gaps.is_empty())
            .then(|| crate::stats::Distribution::from_samples(&gaps, &percentiles));
    }
    metrics
}

async fn warm_up(
    client: &Client,
    prepared: &Prepared,
    driver: &Driver,
    stop: &CancellationToken,
    progress: &ProgressMode,
) -> WarmupSummary {
    let bar = Progress::new("warm-up", prepared.warmups.len(), progress);
    let started = Instant::now();
    let warm_driver = Driver {
        rate: RequestRate::Infinite,
        ..driver.clone()
    };
    let phase = runner::drive(
        client,
        &prepared.warmups,
        &warm_driver,
        &prepared.tokenizer,
        stop,
        &bar,
    )
    .await;
    bar.finish();
    let completed = phase.records.iter().filter(|r| r.is_success()).count();
    WarmupSummary {
        requests: phase.records.len(),
        completed,
        failed: phase.records.len() - completed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The requested percentiles plus 50 and 99, which the Python-compatible keys always need.
fn with_required(requested: &[f64]) -> Vec<f64> {
    let mut all = requested.to_vec();
    for q in [50.0, 99.0] {
        if !all.contains(&q) {
            all.push(q);
        }
    }
    all
}

/// Runtime lag above this at p99 means reads were timestamped late.
const LAG_LIMIT_MS: f64 = 5.0;
/// Output events sharing a read above this share are worth a warning.
const SHARED_READ_SHARE: f64 = 0.01;
/// CPU use above this share of the cores means the client ran out of CPU.
const CPU_LIMIT_SHARE: f64 = 0.85;

fn judge_client(
    cpu: Option<f64>,
    wall: f64,
    lag: &crate::stats::Distribution,
    reads: &ReadStats,
    metrics: &RunMetrics,
) -> ClientOverhead {
    let cores = cores();
    let utilization = cpu.map(|c| if wall > 0.0 { c / wall } else { 0.0 });
    let p99 = lag.percentile(99.0).unwrap_or(0.0);
    let kernel_reads = Some(reads).filter(|r| r.kernel_stamped > 0);
    let timestamps = match (reads.kernel_stamped, reads.read_stamped) {
        (0, _) => "read",
        (_, 0) => "kernel",
        _ => "mixed",
    };
    let wait_ms = |q: f64| kernel_reads.map(|r| r.waited_ns.value_at_quantile(q) as f64 / 1e6);
    let mut warnings = Vec::new();
    let kernel_wait = wait_ms(0.99).filter(|_| timestamps == "kernel");
    match kernel_wait {
        Some(wait) if wait > LAG_LIMIT_MS => warnings.push(format!(
            "the client read arriving data {wait:.1} ms late at p99: event times are the kernel's \
             arrival times, but a stream whose events waited together shares the newest one's \
             time, and requests may have been sent late"
        )),
        Some(_) => {}
        None if p99 > LAG_LIMIT_MS => warnings.push(format!(
            "the client's runtime woke {p99:.1} ms late at p99: its timestamps may be late by as much"
        )),
        None => {}
    }
    if utilization.is_some_and(|u| u > CPU_LIMIT_SHARE * cores as f64) {
        warnings.push(format!(
            "the client used {:.2} of {cores} cores: it may have been the bottleneck",
            utilization.unwrap_or(0.0)
        ));
    }
    if let Some(lag) = &metrics.send_lag_ms {
        if lag.percentile(99.0).unwrap_or(0.0) > 10.0 {
            warnings.push(
                "requests were sent more than 10 ms behind the arrival schedule at p99".into(),
            );
        }
    }
    // Everything above means the client may have been the limit; what follows is a caveat.
    let client_bound = !warnings.is_empty();
    let shared = metrics.events_sharing_a_read as f64 / metrics.output_events.max(1) as f64;
    if shared > SHARED_READ_SHARE {
        warnings.push(format!(
            "{:.1}% of output events were read together with the next one of their stream and \
             carry its arrival time: either the server sent them together (the times are right), \
             or the client fell behind (see client.read_wait_*) and the ITLs around them read too \
             short and too long",
            shared * 100.0
        ));
    }
    let events = metrics.output_events as f64;
    ClientOverhead {
        cpu_seconds: cpu,
        cpu_utilization: utilization,
        cores,
        cpu_seconds_per_100k_events: cpu.filter(|_| events > 0.0).map(|c| c / events * 1e5),
        peak_rss_bytes: overhead::peak_rss_bytes(),
        runtime_lag_p50_ms: lag.median,
        runtime_lag_p99_ms: p99,
        runtime_lag_max_ms: lag.max,
        timestamps,
        read_wait_p50_ms: wait_ms(0.5),
        read_wait_p99_ms: wait_ms(0.99),
        read_wait_max_ms: kernel_reads.map(|r| r.waited_ns.max() as f64 / 1e6),
        client_bound,
        warnings,
    }
}
