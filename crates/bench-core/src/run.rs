//! One benchmark run, start to finish: tokenizer, prompts, warm-up, measured phase, figures.
//!
//! Binaries call [`prepare`] then [`execute`]; a sweep prepares its tokenizer once and reuses it
//! for every cell.

use crate::client::Client;
use crate::config::{RequestRate, RunConfig};
use crate::driver::{self, Driver};
use crate::metrics::{self, RunMetrics};
use crate::overhead::{self, LagProbe};
use crate::progress::{Progress, ProgressMode};
use crate::prompt::{self, PromptRole, PromptStats};
use crate::record::RequestRecord;
use crate::report::{system_info, RunReport};
use crate::request::{self, RequestPlan};
use crate::server_metrics::{RunScrapes, Scraper};
use crate::tokenizer::{HubSettings, PromptTokenizer, TokenizerError};
use crate::transport::ReadStats;
use bench_result::sections::Warmup;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a run could not start. Request failures are not errors: they are measured.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("cannot build the HTTP client")]
    Client(#[source] crate::client::ClientError),
    #[error("prompt building stopped")]
    Join(#[source] tokio::task::JoinError),
    #[error(transparent)]
    OpenFiles(#[from] crate::open_files::TooFewFiles),
    /// The gate before the measured phase ([`execute_gated`]) did not open.
    #[error("{0}")]
    Gate(String),
}

/// What [`execute_gated`] waits for: the other clients of a run measured together, for one.
pub type Gate<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Where [`execute_gated`] waits.
#[derive(Default)]
pub struct Gates<'a> {
    /// After the warm-up: the measured phase starts when it opens; a gate that fails ends the
    /// run with [`RunError::Gate`] before any measured request.
    pub before_measured: Option<Gate<'a>>,
    /// After the measured phase, before the server's counters are read for its end: so they
    /// cover every client's requests. A gate that fails is passed over (what was measured is
    /// kept).
    pub after_measured: Option<Gate<'a>>,
    /// The server's clock, when the server runs in this process on a clock of its own.
    pub server_clock: Option<ServerClock>,
}

/// A server in the same process whose clock is not the wall clock (the simulator's stepped
/// clock): the client tells it of every output event it read, and the measured records are
/// mapped to its clock before any figure is computed from them.
#[derive(Clone)]
pub struct ServerClock {
    pub reads: crate::client::ReadObserver,
    /// The server's instant for what the client stamped at a wall instant.
    pub map: Arc<dyn Fn(Instant) -> Instant + Send + Sync>,
}

impl ServerClock {
    /// Maps every instant of `record` to the server's clock.
    pub fn restamp(&self, record: &mut crate::record::RequestRecord) {
        let map = &self.map;
        record.sent = map(record.sent);
        record.scheduled = record.scheduled.map(|t| map(t));
        for e in &mut record.output_events {
            *e = map(*e);
        }
        record.ended = map(record.ended);
    }
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
        let source = prompt::PromptSource::new(&tok, &cfg.prompt)?;
        let (measured, stats) = source.build(PromptRole::Measured, cfg.num_prompts)?;
        let (warm, _) = source.build(PromptRole::Warmup, cfg.num_warmups)?;
        Ok::<_, TokenizerError>((
            request::plans(&cfg, &measured, PromptRole::Measured),
            request::plans(&cfg, &warm, PromptRole::Warmup),
            stats,
        ))
    })
    .await
    .map_err(RunError::Join)??;
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
    execute_gated(config, prepared, stop, progress, Gates::default()).await
}

/// [`execute`], waiting at `gates` around the measured phase.
pub async fn execute_gated(
    config: &RunConfig,
    prepared: &Prepared,
    stop: &CancellationToken,
    progress: ProgressMode,
    gates: Gates<'_>,
) -> Result<RunReport, RunError> {
    crate::open_files::ensure(config.max_in_flight() as u64)?;
    let started_at = chrono::Local::now();
    let client = client_for(config, gates.server_clock.as_ref())?;
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
    if let Some(gate) = gates.before_measured {
        gate.await.map_err(RunError::Gate)?;
    }
    scrapes.measured_starts().await;
    let mut measured = measure(&client, prepared, &driver, stop, &progress).await;
    if let Some(clock) = &gates.server_clock {
        measured
            .phase
            .records
            .iter_mut()
            .for_each(|r| clock.restamp(r));
    }
    if let Some(gate) = gates.after_measured {
        // Not seeing the others end only narrows the server's window to this client's.
        let _ = gate.await;
    }
    let mut server = scrapes.measured_ended().await;

    let metrics = figures(config, &measured.phase.records);
    let cost = crate::judge::ClientCost {
        cpu_seconds: measured.cpu_seconds,
        wall_seconds: measured.wall.as_secs_f64(),
        lag: &measured.lag,
        reads: &measured.reads,
        transport: config.transport,
    };
    let client_overhead = crate::judge::client(&cost, &metrics);
    let served_models = match (&server_probe, metrics.failures.contains_key("http_404")) {
        (Some(s), true) => s.models(config.api_key.as_deref()).await,
        _ => None,
    };
    server.warnings = crate::judge::server(config, &server, &metrics);
    let phase = measured.phase;
    // A signal that came while the last requests finished interrupted nothing.
    let cut_short = phase
        .records
        .iter()
        .any(|r| matches!(r.outcome, Err(crate::record::FailureReason::Interrupted)));
    let interrupted = stop.is_cancelled() && (phase.not_sent > 0 || cut_short);
    Ok(RunReport {
        config: config.clone(),
        started_at,
        prompt_stats: prepared.prompt_stats.clone(),
        warmup,
        metrics,
        records: phase.records,
        interrupted,
        not_sent: phase.not_sent,
        client: client_overhead,
        server,
        served_models,
        system: system_info(),
        clients: None,
    })
}

/// The run's HTTP client; told of every event it reads when the server's clock asks for it.
fn client_for(config: &RunConfig, server_clock: Option<&ServerClock>) -> Result<Client, RunError> {
    let client = Client::new(
        &config.url(),
        config.endpoint.api,
        config.api_key.clone(),
        crate::client::Timeouts {
            total: config.request_timeout,
            idle: config.idle_timeout,
        },
        config.ca_cert.as_deref(),
        config.transport,
    )
    .map_err(RunError::Client)?;
    Ok(match server_clock {
        Some(clock) => client.observed_by(clock.reads.clone()),
        None => client,
    })
}

/// The measured phase and what it cost the client.
struct Measured {
    phase: driver::PhaseOutcome,
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
    let phase = driver::drive(
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

/// Every figure of the measured phase, the steady state under a concurrency limit, and the
/// closed loop's turnarounds when there is one.
/// Every figure of `records`, measured with `config`.
pub(crate) fn figures(config: &RunConfig, records: &[RequestRecord]) -> RunMetrics {
    let percentiles = with_required(&config.percentiles);
    let mut metrics = metrics::compute(records, &percentiles, &config.goodput, config.ignore_eos);
    metrics.steady_state = config
        .max_concurrency
        .and_then(|limit| crate::steady::window(records, limit.get(), &percentiles));
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
) -> Warmup {
    let bar = Progress::new("warm-up", prepared.warmups.len(), progress);
    let started = Instant::now();
    let warm_driver = Driver {
        rate: RequestRate::Infinite,
        ..driver.clone()
    };
    let phase = driver::drive(
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
    Warmup {
        requests: phase.records.len() as u64,
        completed: completed as u64,
        failed: (phase.records.len() - completed) as u64,
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
