//! `bench-sim`: an OpenAI-compatible engine simulator that behaves like vLLM under load.
//!
//! It is the oracle inferperf's tests measure the client against, and the default server of a
//! new user's first run. A library first: [`Simulator::start`] serves it on `127.0.0.1:0` inside
//! the caller's runtime and returns a [`SimHandle`] with the address, the live engine counters and
//! the [`truth::TruthLog`] of what it did. The `bench-sim` binary wraps the same call.
//!
//! Modules: [`timing`] (step-time formula and presets), [`engine`] (continuous batching),
//! [`stepped`] (the clock that waits for an in-process client between steps), [`wire`] (its own
//! request and reply types, copied from a real vLLM's replies), [`server`] (routes), `reply` (one
//! request's token stream), [`fault`] (seeded fault injection), [`truth`] (the record), [`prom`]
//! (`/metrics`).

pub mod command;
pub mod engine;
pub mod fault;
pub mod lateness;
pub mod order;
pub mod prom;
mod reply;
mod scheduler;
pub mod server;
pub mod stepped;
pub mod timing;
pub mod truth;
pub mod wire;

use engine::{Engine, EngineStats, ScheduleReport};
use fault::Faults;
use server::AppState;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timing::Timing;
use tokio_util::sync::CancellationToken;
use truth::TruthLog;

/// Everything the simulator is told.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub served_model_name: String,
    pub max_model_len: u64,
    pub timing: Timing,
    /// Run the schedule this many times faster than real time (1 = real time).
    pub time_scale: f64,
    pub seed: u64,
    pub faults: Faults,
    /// A tokenizer.json (or .json.gz) to count prompt tokens exactly.
    pub tokenizer: Option<PathBuf>,
    /// `/health` answers 503 (and requests are refused) for this long after start.
    pub slow_start: Duration,
    /// Scripted restart: after this long every open stream is cut and the server is down for
    /// `restart_downtime`.
    pub restart_after: Option<Duration>,
    pub restart_downtime: Duration,
    /// Append every request's truth to this JSONL file.
    pub truth_jsonl: Option<PathBuf>,
    /// Run the batching engine on a stepped clock instead of the wall clock ([`stepped`]): for
    /// a client in the same process that reports its reads ([`SimHandle::stepped`]).
    /// `time_scale` then has no effect on it.
    pub stepped_clock: bool,
}

impl SimConfig {
    /// A simulator serving `model` with the named timing preset, no faults, real time.
    pub fn preset(model: &str, preset: &str) -> Option<Self> {
        Some(Self {
            served_model_name: model.to_string(),
            max_model_len: 65_536,
            timing: timing::preset(preset)?,
            time_scale: 1.0,
            seed: 0,
            faults: Faults::default(),
            tokenizer: None,
            slow_start: Duration::ZERO,
            restart_after: None,
            restart_downtime: Duration::from_secs(1),
            truth_jsonl: None,
            stepped_clock: false,
        })
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("cannot open truth log {path}")]
    TruthLog {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`SimHandle::pretokenize`] did with an announcement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Announced {
    /// Requests whose prompt count is known ahead.
    pub known: usize,
    /// Prompts the tokenizer counted for it; the others repeat the last announcement's.
    pub counted: usize,
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("model", &self.config.served_model_name)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the simulator did for every finished request so far.
    pub fn truth(&self) -> Vec<truth::RequestTruth> {
        self.state.truth.records()
    }

    /// Whether the engine kept its own schedule.
    pub fn schedule(&self) -> ScheduleReport {
        self.state.stats.report()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.state.stats
    }

    /// Counts the prompts of these request bodies now, so that the requests need no tokenizing
    /// when they come.
    ///
    /// Counting a long prompt takes real milliseconds, which a time scale multiplies into
    /// modelled time: at 20x, 20 ms of tokenizing an 8,192-token prompt would add 400 ms to its
    /// TTFT. A client that knows its requests (the `sweep --simulate` demo) announces them before
    /// sending them. The bodies are read as the handlers read them and counted with the
    /// simulator's own tokenizer; each count is used once. The prompts of the announcement before
    /// are not counted again (a cell run again announces the same requests).
    ///
    /// The bodies' order is the order the client will send them in, and the engine takes them
    /// in that order whatever order the machine delivers them in ([`order`]), so the same
    /// announced requests get the same schedule on any machine. An announcement replaces the
    /// one before it. Returns how many requests are known ahead and how many prompts were
    /// counted for them (none without a tokenizer: estimates cost nothing, and the requests keep
    /// their own arrival order).
    pub async fn pretokenize<B: AsRef<[u8]>>(&self, bodies: &[B]) -> Announced {
        let texts: Vec<String> = bodies
            .iter()
            .filter_map(|b| server::prompt_text_of(b.as_ref()))
            .collect();
        let Some(tok) = self.state.tokenizer.clone() else {
            return Announced::default();
        };
        let keys: Vec<(usize, u64)> = texts.iter().map(|t| server::prompt_key(t)).collect();
        // The last announcement's counts; what this one repeats needs no counting again.
        let mut counts = self
            .state
            .last_counts
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let new: Vec<String> = texts
            .into_iter()
            .zip(&keys)
            .filter(|(_, key)| !counts.contains_key(*key))
            .map(|(text, _)| text)
            .collect();
        let counted = tokio::task::spawn_blocking(move || {
            tok.encode_batch_fast(new.iter().map(String::as_str).collect::<Vec<_>>(), true)
                .map(|encs| {
                    new.iter()
                        .map(|t| server::prompt_key(t))
                        .zip(encs.iter().map(|e| e.len() as u64))
                        .collect::<Vec<_>>()
                })
        })
        .await;
        match counted {
            Ok(Ok(pairs)) => {
                let counted = pairs.len();
                counts.extend(pairs);
                let announced: std::collections::HashSet<&(usize, u64)> = keys.iter().collect();
                counts.retain(|key, _| announced.contains(key));
                let n = keys.len();
                if let Ok(mut known) = self.state.known_prompts.lock() {
                    known.clear();
                    let first = self.state.order.announce(n as u64);
                    for (position, key) in (first..).zip(&keys) {
                        // Every key was either counted before or just now.
                        if let Some(&tokens) = counts.get(key) {
                            let entry = known.entry(*key).or_default();
                            entry.tokens = tokens;
                            entry.positions.push_back(position);
                        }
                    }
                }
                if let Ok(mut last) = self.state.last_counts.lock() {
                    *last = counts;
                }
                Announced { known: n, counted }
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot pretokenize prompts: {e}");
                Announced::default()
            }
            Err(e) => {
                tracing::warn!("prompt pretokenizing stopped: {e}");
                Announced::default()
            }
        }
    }

    /// The stepped clock the engine runs on, when [`SimConfig::stepped_clock`] asked for one and
    /// the timing has steps: the client reports its reads to it and maps its stamps through it.
    pub fn stepped(&self) -> Option<&Arc<stepped::SteppedClock>> {
        self.state.stepped()
    }

    /// Tells a stepped clock that the latest announcement ([`SimHandle::pretokenize`]) is a
    /// closed loop of these phases, in announced order, so that it waits for the requests they
    /// owe (no effect without a stepped clock).
    pub fn closed_loop(&self, phases: &[stepped::Phase]) {
        if let Some(clock) = self.stepped() {
            clock.closed_loop(self.state.order.latest(), phases);
        }
    }

    /// Runs the schedule `scale` times faster than real time from now on (requests already
    /// admitted keep their timing where it is fixed per request). For between runs.
    pub fn set_time_scale(&self, scale: f64) {
        self.state.stats.set_time_scale(scale);
    }

    pub fn time_scale(&self) -> f64 {
        self.state.stats.time_scale()
    }

    /// The configuration it started with.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Ok(epoch) = self.state.epoch.lock() {
            epoch.cancel();
        }
        let _ = self.task.await;
    }
}

/// The simulator as a library.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `addr` (port 0 for any free port) and serves until [`SimHandle::stop`].
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, SimError> {
        let tokenizer = match &config.tokenizer {
            Some(p) => Some(Arc::new(load_tokenizer(p)?)),
            None => None,
        };
        let jsonl = match &config.truth_jsonl {
            Some(p) => Some(
                std::fs::File::create(p).map_err(|source| SimError::TruthLog {
                    path: p.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let started = Instant::now();
        let stats = Arc::new(EngineStats::default());
        let steps = matches!(config.timing, Timing::Batching(_));
        let stepped =
            (config.stepped_clock && steps).then(|| Arc::new(stepped::SteppedClock::default()));
        let engine = Engine::start(
            &config.timing,
            config.time_scale.max(1e-9),
            Arc::clone(&stats),
            stepped.clone(),
        );
        if let Some(clock) = &stepped {
            stats.set_time_scale(1.0);
            let _ = stats.stepped.set(Arc::clone(clock));
        }
        let state = Arc::new(AppState {
            truth: Arc::new(TruthLog::new(started, jsonl)),
            config,
            engine,
            stats,
            tokenizer,
            histograms: Mutex::new(prom::Histograms::default()),
            next_id: AtomicU64::new(0),
            started,
            epoch: Mutex::new(CancellationToken::new()),
            down_until: Mutex::new(None),
            requests_total: AtomicU64::new(0),
            known_prompts: Mutex::new(std::collections::HashMap::new()),
            order: order::AnnouncedOrder::default(),
            last_counts: Mutex::new(std::collections::HashMap::new()),
        });
        if let Some(after) = state.config.restart_after {
            tokio::spawn(scripted_restart(Arc::clone(&state), after));
        }
        let shutdown = CancellationToken::new();
        let app = server::app(Arc::clone(&state));
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            // Without TCP_NODELAY the first token waits behind the response headers for the
            // client's delayed ACK (~40 ms on Linux); real servers (uvicorn) disable Nagle too.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!("cannot set TCP_NODELAY: {e}");
                }
            });
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                stop.cancelled().await;
            });
            if let Err(e) = serve.await {
                tracing::error!("simulator server stopped: {e}");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            shutdown,
            task,
        })
    }
}

/// Cuts every open stream at `after`, stays down for the configured downtime, then serves again.
async fn scripted_restart(state: Arc<AppState>, after: Duration) {
    tokio::time::sleep(after).await;
    let downtime = state.config.restart_downtime;
    if let Ok(mut d) = state.down_until.lock() {
        *d = Some(Instant::now() + downtime);
    }
    if let Ok(mut epoch) = state.epoch.lock() {
        epoch.cancel();
        *epoch = CancellationToken::new();
    }
    tracing::warn!("scripted restart: open streams cut, down for {downtime:?}");
}

fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, SimError> {
    use std::io::Read;
    let fail = |message: String| SimError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let file = if path.is_dir() {
        ["tokenizer.json", "tokenizer.json.gz"]
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| fail("no tokenizer.json in the folder".into()))?
    } else {
        path.to_path_buf()
    };
    let raw = std::fs::read(&file).map_err(|e| fail(e.to_string()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
        out
    } else {
        raw
    };
    tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| fail(e.to_string()))
}
