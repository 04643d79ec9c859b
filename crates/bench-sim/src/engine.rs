//! The engine: turns admitted requests into token due times.
//!
//! [`Engine::Batching`] is vLLM-style continuous batching (the `scheduler` module), run by one OS
//! thread of its own that sleeps precisely until each step's planned end: the runtime's timer
//! has a resolution of 1 ms, which at a time scale of 20 would be 20 ms of modelled jitter per
//! token. Every step decodes one token for each running sequence past its prefill and spends the
//! rest of the token budget on prefill chunks. A sequence's first token is due at the end of the
//! step that completes its prefill, then one per step.
//!
//! [`Engine::Fixed`] gives each request its own timer: first token `ttft` after arrival, then one
//! every `itl`, with no interaction between requests. Its timeline runs inside the request's
//! stream ([`FixedTimeline`]), so thousands of streams cost no task or channel of their own.
//!
//! Both record how late they were against their plan in [`EngineStats`] ([`crate::lateness`]):
//! a simulator that falls behind models a slower engine than its preset, and must say so.

use crate::lateness::{Lateness, LatenessSnapshot, EVENT_TOLERANCE, STEP_TOLERANCE};
use crate::scheduler::Scheduler;
use crate::stepped::SteppedClock;
use crate::timing::Timing;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Length,
    Stop,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Stop => "stop",
        }
    }
}

/// What the engine tells a request's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Prefill of this request started.
    PrefillStart(Instant),
    /// One token, due at this instant; the last one names why the sequence stopped.
    Token(Instant, Option<FinishReason>),
}

/// A request handed to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub prompt_tokens: u64,
    pub max_tokens: u64,
    /// Stop early (end of sequence) after this many tokens; `None` with `ignore_eos`.
    pub eos_after: Option<u64>,
    pub arrival: Instant,
    /// Its place in the announced order ([`crate::order`]), when it had one.
    pub position: Option<u64>,
}

impl Request {
    /// Tokens it will produce, and why it will stop.
    pub(crate) fn limit(&self) -> (u64, FinishReason) {
        let limit = self
            .eos_after
            .unwrap_or(self.max_tokens)
            .clamp(1, self.max_tokens.max(1));
        let reason = if limit < self.max_tokens {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        (limit, reason)
    }
}

/// A request on its way to the batching scheduler, with where its timeline goes.
#[derive(Debug)]
pub struct Admission {
    pub(crate) request: Request,
    pub(crate) tx: mpsc::UnboundedSender<Emit>,
}

/// One request's timeline, as its stream reads it.
#[derive(Debug)]
pub enum Timeline {
    /// From the batching scheduler's task.
    Batching(mpsc::UnboundedReceiver<Emit>),
    /// Computed in place: the stream itself sleeps until each token is due, so a token costs
    /// one wake-up of the stream's connection and nothing else.
    Fixed(FixedTimeline),
}

impl Timeline {
    /// The next thing that happened to the request; `None` when the engine dropped it.
    pub async fn next(&mut self) -> Option<Emit> {
        match self {
            Self::Batching(rx) => rx.recv().await,
            Self::Fixed(t) => t.next().await,
        }
    }
}

/// Fixed timing for one request: first token `ttft` after arrival, then one every `itl`.
#[derive(Debug)]
pub struct FixedTimeline {
    arrival: Instant,
    started: bool,
    due: Instant,
    itl: Duration,
    sent: u64,
    limit: u64,
    reason: FinishReason,
    stats: Arc<EngineStats>,
}

impl FixedTimeline {
    fn new(request: &Request, ttft: Duration, itl: Duration, stats: Arc<EngineStats>) -> Self {
        let (limit, reason) = request.limit();
        stats.running.fetch_add(1, Ordering::Relaxed);
        stats
            .prompt_tokens_total
            .fetch_add(request.prompt_tokens, Ordering::Relaxed);
        Self {
            arrival: request.arrival,
            started: false,
            due: request.arrival + ttft,
            itl,
            sent: 0,
            limit,
            reason,
            stats,
        }
    }

    async fn next(&mut self) -> Option<Emit> {
        if !self.started {
            self.started = true;
            return Some(Emit::PrefillStart(self.arrival));
        }
        if self.sent >= self.limit {
            return None;
        }
        tokio::time::sleep_until(self.due.into()).await;
        self.stats
            .generation_tokens_total
            .fetch_add(1, Ordering::Relaxed);
        self.sent += 1;
        let due = self.due;
        self.due += self.itl;
        let finish = (self.sent == self.limit).then_some(self.reason);
        if finish.is_some() {
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
        }
        Some(Emit::Token(due, finish))
    }
}

impl Drop for FixedTimeline {
    /// A stream dropped before its last token (the client went away) leaves the running count.
    fn drop(&mut self) {
        if self.sent < self.limit {
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Live counters, read by `/metrics` and by tests.
#[derive(Debug)]
pub struct EngineStats {
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub kv_used_tokens: AtomicU64,
    pub kv_capacity_tokens: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub generation_tokens_total: AtomicU64,
    /// Batching steps' ends against their plan.
    pub steps: Lateness,
    /// Token events' hand-over to the connection against when their last token was due.
    pub events: Lateness,
    /// Wall time the schedule lost by restarting late steps from when they woke (ns): modelled
    /// time that never happened.
    pub lost_ns: AtomicU64,
    /// Prompts counted with the tokenizer while a request waited, and the wall time it took
    /// (ns); prompts whose count was known ahead ([`crate::SimHandle::pretokenize`]) cost none.
    pub prompts_counted: AtomicU64,
    pub prompt_counting_ns: AtomicU64,
    pub prompts_known: AtomicU64,
    /// The batching engine thread's `schedstat` file (Linux), to tell how long the machine kept
    /// it from running.
    pub engine_thread: std::sync::OnceLock<std::path::PathBuf>,
    /// How many times faster than real time the schedule runs (an `f64`'s bits); settable
    /// between runs ([`crate::SimHandle::set_time_scale`]).
    time_scale_bits: AtomicU64,
    /// The stepped clock the engine runs on, if it does.
    pub stepped: std::sync::OnceLock<Arc<SteppedClock>>,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            kv_used_tokens: AtomicU64::new(0),
            kv_capacity_tokens: AtomicU64::new(0),
            prompt_tokens_total: AtomicU64::new(0),
            generation_tokens_total: AtomicU64::new(0),
            steps: Lateness::new(STEP_TOLERANCE),
            events: Lateness::new(EVENT_TOLERANCE),
            lost_ns: AtomicU64::new(0),
            prompts_counted: AtomicU64::new(0),
            prompt_counting_ns: AtomicU64::new(0),
            prompts_known: AtomicU64::new(0),
            engine_thread: std::sync::OnceLock::new(),
            time_scale_bits: AtomicU64::new(1.0f64.to_bits()),
            stepped: std::sync::OnceLock::new(),
        }
    }
}

/// What the operating system says of one thread: CPU time it ran, and time it was ready to run
/// but waited for a core (its run-queue delay), from `/proc/<pid>/task/<tid>/schedstat`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThreadTimes {
    pub cpu_seconds: f64,
    pub runqueue_wait_seconds: f64,
}

impl ThreadTimes {
    /// The calling thread's `schedstat` path, where the kernel has one.
    pub fn own_path() -> Option<std::path::PathBuf> {
        // `/proc/thread-self` links to `<pid>/task/<tid>` for the thread that resolves it.
        let rel = std::fs::read_link("/proc/thread-self").ok()?;
        let path = std::path::Path::new("/proc").join(rel).join("schedstat");
        path.is_file().then_some(path)
    }

    pub fn read(path: &std::path::Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        let cpu = fields.next()?.ok()?;
        let wait = fields.next()?.ok()?;
        Some(Self {
            cpu_seconds: cpu as f64 / 1e9,
            runqueue_wait_seconds: wait as f64 / 1e9,
        })
    }
}

/// How well the simulator kept its schedule since it started (see [`crate::lateness`]).
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    pub steps: LatenessSnapshot,
    pub events: LatenessSnapshot,
    /// Wall seconds lost to restarting late steps.
    pub lost_seconds: f64,
    pub prompts_counted: u64,
    pub prompt_counting_seconds: f64,
    pub prompts_known: u64,
    /// The batching engine thread's CPU and run-queue time, where the OS reports them.
    pub engine_thread: Option<ThreadTimes>,
    /// On a stepped clock: its windows, and those that went on without the client.
    pub stepped: Option<SteppedReport>,
}

/// What a stepped clock did ([`crate::stepped`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SteppedReport {
    pub windows: u64,
    pub timeouts: u64,
}

impl ScheduleReport {
    /// No step or event later than its tolerance.
    pub fn kept_schedule(&self) -> bool {
        self.steps.late == 0
            && self.events.late == 0
            && self.stepped.is_none_or(|s| s.timeouts == 0)
    }
}

impl EngineStats {
    pub fn time_scale(&self) -> f64 {
        f64::from_bits(self.time_scale_bits.load(Ordering::Relaxed))
    }

    /// Sets the time scale (clamped above 0); steps and requests started later use it. A stepped
    /// clock has none: it stays 1.
    pub fn set_time_scale(&self, scale: f64) {
        if self.stepped.get().is_some() {
            return;
        }
        let scale = if scale.is_finite() {
            scale.max(1e-9)
        } else {
            1.0
        };
        self.time_scale_bits
            .store(scale.to_bits(), Ordering::Relaxed);
    }

    pub fn report(&self) -> ScheduleReport {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ScheduleReport {
            steps: self.steps.snapshot(),
            events: self.events.snapshot(),
            lost_seconds: load(&self.lost_ns) as f64 / 1e9,
            prompts_counted: load(&self.prompts_counted),
            prompt_counting_seconds: load(&self.prompt_counting_ns) as f64 / 1e9,
            prompts_known: load(&self.prompts_known),
            engine_thread: self.engine_thread.get().and_then(|p| ThreadTimes::read(p)),
            stepped: self.stepped.get().map(|c| SteppedReport {
                windows: c.windows() as u64,
                timeouts: c.timeouts(),
            }),
        }
    }

    /// Records a prompt counted by the tokenizer in `took`.
    pub fn note_counting(&self, took: Duration) {
        self.prompts_counted.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.prompt_counting_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A running engine: where admissions go.
#[derive(Debug, Clone)]
pub enum Engine {
    Batching {
        tx: std::sync::mpsc::Sender<Admission>,
        /// The stepped clock the engine runs on, if it does ([`crate::stepped`]).
        stepped: Option<Arc<SteppedClock>>,
    },
    Fixed {
        ttft: Duration,
        itl: Duration,
        stats: Arc<EngineStats>,
    },
}

impl Engine {
    /// Starts the engine for `timing` on the current runtime; with `stepped`, a batching engine
    /// runs on that clock instead of the wall clock (fixed timing has no steps and ignores it).
    pub fn start(
        timing: &Timing,
        time_scale: f64,
        stats: Arc<EngineStats>,
        stepped: Option<Arc<SteppedClock>>,
    ) -> Self {
        stats.set_time_scale(time_scale);
        match timing {
            Timing::Batching(params) => {
                let (tx, rx) = std::sync::mpsc::channel();
                stats
                    .kv_capacity_tokens
                    .store(params.kv_cache_tokens, Ordering::Relaxed);
                let scheduler = Scheduler::new(params.clone(), stats);
                let clock = stepped.clone();
                // The thread ends when every sender is gone (the server stopped).
                let spawned = std::thread::Builder::new().name("sim-engine".into()).spawn(
                    move || match clock {
                        Some(clock) => scheduler.run_stepped(&rx, &clock),
                        None => scheduler.run(&rx),
                    },
                );
                if let Err(e) = spawned {
                    tracing::error!("cannot start the engine thread: {e}");
                }
                Self::Batching { tx, stepped }
            }
            Timing::Fixed { ttft, itl } => Self::Fixed {
                ttft: *ttft,
                itl: *itl,
                stats,
            },
        }
    }

    /// Hands a request to the engine and returns its timeline.
    pub fn admit(&self, request: Request) -> Timeline {
        match self {
            Self::Batching { tx, stepped } => {
                let (timeline, rx) = mpsc::unbounded_channel();
                // A closed engine drops the request; its stream then ends as cut.
                let _ = tx.send(Admission {
                    request,
                    tx: timeline,
                });
                if let Some(clock) = stepped {
                    clock.wake();
                }
                Timeline::Batching(rx)
            }
            Self::Fixed { ttft, itl, stats } => {
                let scale = stats.time_scale();
                let (ttft, itl) = (ttft.div_f64(scale), itl.div_f64(scale));
                Timeline::Fixed(FixedTimeline::new(&request, ttft, itl, Arc::clone(stats)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::preset;

    async fn tokens(mut timeline: Timeline) -> Vec<Instant> {
        let mut out = Vec::new();
        while let Some(e) = timeline.next().await {
            if let Emit::Token(t, finish) = e {
                out.push(t);
                if finish.is_some() {
                    break;
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_timing_is_exact_and_time_scale_divides_it() {
        let stats = Arc::new(EngineStats::default());
        let fixed = preset("fixed").expect("preset");
        let engine = Engine::start(&fixed, 2.0, stats, None);
        let start = Instant::now();
        let timeline = engine.admit(Request {
            prompt_tokens: 10,
            max_tokens: 3,
            eos_after: None,
            arrival: start,
            position: None,
        });
        let toks = tokens(timeline).await;
        assert_eq!(toks[0] - start, Duration::from_millis(25));
        assert_eq!(toks[2] - toks[1], Duration::from_millis(5));
    }
}
