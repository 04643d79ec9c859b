//! The engine: turns admitted requests into token due times.
//!
//! [`Engine::Batching`] is one task running vLLM-style continuous batching: every step decodes
//! one token for each running sequence past its prefill and spends the rest of the token budget
//! on prefill chunks (sequences already prefilling first, then waiting ones in arrival order, each
//! admitted while the sequence limit and KV-cache capacity allow). A sequence's first token is due
//! at the end of the step that completes its prefill, then one per step. Every running sequence's
//! token of a step is due at the same instant: the step's end.
//!
//! The loop sleeps until each step's planned end. When it wakes late (the host is overloaded) the
//! lateness is counted, and the next step starts from the actual time: the truth is then what
//! happened, not what was planned, and [`EngineStats`] says so.
//!
//! [`Engine::Fixed`] gives each request its own timer: first token `ttft` after arrival, then one
//! every `itl`, with no interaction between requests. Its timeline runs inside the request's
//! stream ([`FixedTimeline`]), so thousands of streams cost no task or channel of their own.

use crate::timing::{EngineParams, Timing};
use serde::Serialize;
use std::collections::VecDeque;
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
}

impl Request {
    /// Tokens it will produce, and why it will stop.
    fn limit(&self) -> (u64, FinishReason) {
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
    request: Request,
    tx: mpsc::UnboundedSender<Emit>,
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
            .note_lateness(Instant::now().saturating_duration_since(self.due));
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
#[derive(Debug, Default)]
pub struct EngineStats {
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub kv_used_tokens: AtomicU64,
    pub kv_capacity_tokens: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub generation_tokens_total: AtomicU64,
    pub steps: AtomicU64,
    /// Steps that ended more than [`LATE_TOLERANCE`] after their planned end.
    pub late_steps: AtomicU64,
    pub max_lateness_us: AtomicU64,
}

/// Snapshot of [`EngineStats`] for reports.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    pub steps: u64,
    pub late_steps: u64,
    pub max_lateness_ms: f64,
    pub kept_schedule: bool,
}

impl EngineStats {
    pub fn report(&self) -> ScheduleReport {
        let late = self.late_steps.load(Ordering::Relaxed);
        ScheduleReport {
            steps: self.steps.load(Ordering::Relaxed),
            late_steps: late,
            max_lateness_ms: self.max_lateness_us.load(Ordering::Relaxed) as f64 / 1e3,
            kept_schedule: late == 0,
        }
    }

    fn note_lateness(&self, late: Duration) {
        if late > LATE_TOLERANCE {
            self.late_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.max_lateness_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Waking later than this after a planned instant counts as falling behind. Tokio's timer has
/// millisecond granularity, so up to ~1 ms is the timer, not the host.
pub const LATE_TOLERANCE: Duration = Duration::from_millis(2);

/// A running engine: where admissions go.
#[derive(Debug, Clone)]
pub enum Engine {
    Batching(mpsc::UnboundedSender<Admission>),
    Fixed {
        ttft: Duration,
        itl: Duration,
        time_scale: f64,
        stats: Arc<EngineStats>,
    },
}

impl Engine {
    /// Starts the engine for `timing` on the current runtime.
    pub fn start(timing: &Timing, time_scale: f64, stats: Arc<EngineStats>) -> Self {
        match timing {
            Timing::Batching(params) => {
                let (tx, rx) = mpsc::unbounded_channel();
                stats
                    .kv_capacity_tokens
                    .store(params.kv_cache_tokens, Ordering::Relaxed);
                let scheduler = Scheduler::new(params.clone(), time_scale, stats);
                tokio::spawn(scheduler.run(rx));
                Self::Batching(tx)
            }
            Timing::Fixed { ttft, itl } => Self::Fixed {
                ttft: *ttft,
                itl: *itl,
                time_scale,
                stats,
            },
        }
    }

    /// Hands a request to the engine and returns its timeline.
    pub fn admit(&self, request: Request) -> Timeline {
        match self {
            Self::Batching(tx) => {
                let (timeline, rx) = mpsc::unbounded_channel();
                // A closed engine drops the request; its stream then ends as cut.
                let _ = tx.send(Admission {
                    request,
                    tx: timeline,
                });
                Timeline::Batching(rx)
            }
            Self::Fixed {
                ttft,
                itl,
                time_scale,
                stats,
            } => {
                let (ttft, itl) = (ttft.div_f64(*time_scale), itl.div_f64(*time_scale));
                Timeline::Fixed(FixedTimeline::new(&request, ttft, itl, Arc::clone(stats)))
            }
        }
    }
}

struct Seq {
    prompt: u64,
    prefilled: u64,
    generated: u64,
    limit: u64,
    reason: FinishReason,
    reserved: u64,
    tx: mpsc::UnboundedSender<Emit>,
}

impl Seq {
    /// Emits the next token; a client that went away ends the sequence.
    fn emit(&mut self, due: Instant) {
        self.generated += 1;
        let finish = (self.generated >= self.limit).then_some(self.reason);
        if self.tx.send(Emit::Token(due, finish)).is_err() {
            self.generated = self.limit;
        }
    }
}

struct Scheduler {
    params: EngineParams,
    time_scale: f64,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    kv_used: u64,
}

/// One planned step.
struct Plan {
    /// (index into running, prefill tokens) for sequences prefilling this step.
    prefill: Vec<(usize, u64)>,
    prefill_tokens: u64,
    decode: u64,
    context: u64,
}

impl Scheduler {
    fn new(params: EngineParams, time_scale: f64, stats: Arc<EngineStats>) -> Self {
        Self {
            params,
            time_scale,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv_used: 0,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Admission>) {
        let mut step_start = Instant::now();
        loop {
            if self.waiting.is_empty() && self.running.is_empty() {
                let Some(a) = rx.recv().await else { return };
                self.enqueue(a);
                step_start = Instant::now();
            }
            while let Ok(a) = rx.try_recv() {
                self.enqueue(a);
            }
            self.admit();
            let plan = self.plan();
            let took = self
                .params
                .step_time(plan.prefill_tokens, plan.decode, plan.context)
                .div_f64(self.time_scale);
            for &(i, _) in &plan.prefill {
                if self.running[i].prefilled == 0 {
                    let _ = self.running[i].tx.send(Emit::PrefillStart(step_start));
                }
            }
            let step_end = step_start + took;
            tokio::time::sleep_until(step_end.into()).await;
            let now = Instant::now();
            self.stats
                .note_lateness(now.saturating_duration_since(step_end));
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
            self.finish_step(&plan, step_end);
            self.publish();
            // Behind schedule: the next step starts when we actually got here.
            step_start = if now > step_end + crate::engine::LATE_TOLERANCE {
                now
            } else {
                step_end
            };
        }
    }

    fn enqueue(&mut self, a: Admission) {
        let (limit, reason) = a.request.limit();
        let r = a.request;
        self.waiting.push_back(Seq {
            prompt: r.prompt_tokens.max(1),
            prefilled: 0,
            generated: 0,
            limit,
            reason,
            reserved: r.prompt_tokens + r.max_tokens,
            tx: a.tx,
        });
    }

    /// Moves waiting sequences into the running set while slots and KV capacity allow.
    fn admit(&mut self) {
        self.waiting.retain(|s| !s.tx.is_closed());
        while let Some(next) = self.waiting.front() {
            let fits_kv = self.kv_used + next.reserved <= self.params.kv_cache_tokens
                // A request larger than the whole cache still runs alone rather than never.
                || (self.running.is_empty() && self.kv_used == 0);
            if self.running.len() >= self.params.max_num_seqs || !fits_kv {
                break;
            }
            let Some(seq) = self.waiting.pop_front() else {
                break;
            };
            self.kv_used += seq.reserved;
            self.running.push(seq);
        }
    }

    fn plan(&self) -> Plan {
        let mut budget = self.params.max_num_batched_tokens;
        let mut plan = Plan {
            prefill: Vec::new(),
            prefill_tokens: 0,
            decode: 0,
            context: 0,
        };
        for s in self.running.iter().filter(|s| s.prefilled >= s.prompt) {
            plan.decode += 1;
            plan.context += s.prompt + s.generated;
        }
        budget = budget.saturating_sub(plan.decode);
        for (i, s) in self.running.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if s.prefilled < s.prompt {
                let chunk = (s.prompt - s.prefilled).min(budget);
                budget -= chunk;
                plan.prefill_tokens += chunk;
                plan.prefill.push((i, chunk));
            }
        }
        plan
    }

    fn finish_step(&mut self, plan: &Plan, step_end: Instant) {
        let mut emitted = 0;
        // Decode tokens for sequences that were past prefill when the step began.
        let prefilling: Vec<bool> = self
            .running
            .iter()
            .map(|s| s.prefilled < s.prompt)
            .collect();
        for (s, _) in self
            .running
            .iter_mut()
            .zip(&prefilling)
            .filter(|(_, p)| !**p)
        {
            emitted += 1;
            s.emit(step_end);
        }
        for &(i, chunk) in &plan.prefill {
            let s = &mut self.running[i];
            s.prefilled += chunk;
            self.stats
                .prompt_tokens_total
                .fetch_add(chunk, Ordering::Relaxed);
            if s.prefilled >= s.prompt {
                emitted += 1;
                s.emit(step_end);
            }
        }
        self.stats
            .generation_tokens_total
            .fetch_add(emitted, Ordering::Relaxed);
        let mut freed = 0;
        self.running.retain(|s| {
            let done = s.generated >= s.limit;
            if done {
                freed += s.reserved;
            }
            !done
        });
        self.kv_used -= freed;
    }

    fn publish(&self) {
        let st = &self.stats;
        st.running
            .store(self.running.len() as u64, Ordering::Relaxed);
        st.waiting
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        st.kv_used_tokens.store(self.kv_used, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::preset;

    fn params() -> EngineParams {
        EngineParams {
            base_ms: 10.0,
            prefill_ms_per_token: 0.0,
            decode_ms_per_seq: 0.0,
            context_ms_per_token: 0.0,
            tp: 1,
            max_num_batched_tokens: 100,
            max_num_seqs: 2,
            kv_cache_tokens: 10_000,
        }
    }

    async fn timeline(engine: &Engine, prompt: u64, max: u64) -> Timeline {
        engine.admit(Request {
            prompt_tokens: prompt,
            max_tokens: max,
            eos_after: None,
            arrival: Instant::now(),
        })
    }

    async fn tokens(mut timeline: Timeline) -> (Vec<Instant>, Option<FinishReason>) {
        let mut out = Vec::new();
        while let Some(e) = timeline.next().await {
            match e {
                Emit::Token(t, Some(r)) => {
                    out.push(t);
                    return (out, Some(r));
                }
                Emit::Token(t, None) => out.push(t),
                Emit::PrefillStart(_) => {}
            }
        }
        (out, None)
    }

    #[tokio::test(start_paused = true)]
    async fn chunked_prefill_then_one_token_per_step() {
        let stats = Arc::new(EngineStats::default());
        let engine = Engine::start(&Timing::Batching(params()), 1.0, Arc::clone(&stats));
        // 250 prompt tokens at 100 per step: prefill ends with step 3; then 3 more tokens.
        let (toks, reason) = tokens(timeline(&engine, 250, 4).await).await;
        assert_eq!(toks.len(), 4);
        assert_eq!(reason, Some(FinishReason::Length));
        let gaps: Vec<Duration> = toks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g == Duration::from_millis(10)),
            "{gaps:?}"
        );
        assert_eq!(stats.prompt_tokens_total.load(Ordering::Relaxed), 250);
        assert_eq!(stats.generation_tokens_total.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn sequence_limit_makes_the_third_request_wait() {
        let stats = Arc::new(EngineStats::default());
        let engine = Engine::start(&Timing::Batching(params()), 1.0, stats);
        let a = timeline(&engine, 10, 5).await;
        let b = timeline(&engine, 10, 5).await;
        let c = timeline(&engine, 10, 5).await;
        let (ta, _) = tokens(a).await;
        let (tb, _) = tokens(b).await;
        let (tc, _) = tokens(c).await;
        assert_eq!(ta[0], tb[0]);
        // c starts only after a and b finish (max_num_seqs = 2).
        assert!(tc[0] > *ta.last().expect("tokens"));
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_timing_is_exact_and_time_scale_divides_it() {
        let stats = Arc::new(EngineStats::default());
        let fixed = preset("fixed").expect("preset");
        let engine = Engine::start(&fixed, 2.0, stats);
        let start = Instant::now();
        let (toks, _) = tokens(timeline(&engine, 10, 3).await).await;
        let ttft = toks[0] - start;
        assert!(
            ttft >= Duration::from_millis(25) && ttft < Duration::from_millis(26),
            "{ttft:?}"
        );
        assert_eq!(toks[2] - toks[1], Duration::from_millis(5));
    }
}
