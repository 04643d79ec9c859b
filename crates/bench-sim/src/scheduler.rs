//! vLLM-style continuous batching, on a thread of its own.
//!
//! [`Scheduler`] is the pure part: sequences waiting and running, KV-cache reservations, and for
//! each step a [`Plan`] (one decode token for every sequence past its prefill, then prefill chunks
//! for the others, sequences already prefilling first, up to `max_num_batched_tokens`) and its
//! duration from [`EngineParams::step_time`]. A request joins the first step that starts at or
//! after its arrival at the server, never one that began before it, so a closed loop of clients
//! (a request sent when another ends) gets the same schedule whatever the machine's own delays:
//! the request a step's last token triggers always arrives after the next step began. An idle
//! engine starts its step at the request's arrival, not when its thread got to it. Announced
//! requests arrive here in their announced order, whatever order the machine delivered them in
//! ([`crate::order`]).
//! [`Scheduler::run`] drives it in real time: it sleeps
//! until each step's planned end with the operating system's timer (precise to ~0.1 ms, where the
//! async runtime's has 1 ms), emits that step's tokens, all due at the step's end, and starts the
//! next step at the planned end. A step that wakes more than [`STEP_TOLERANCE`] late restarts the
//! schedule from when it woke; that time is counted as lost (see [`crate::lateness`]).
//!
//! Why not catch up instead (start the next step at its planned time, as fixed timing's streams
//! do)? The throughput would keep its figure, but the closed loop would not: the tokens of a
//! late step reach their clients late, their next requests arrive late, and the steps run back
//! to back to catch up have begun before those arrive, so they join later steps than in real
//! time and the batches take another shape. Measured with the demo at 5.5x with one core taken
//! (18 late steps, token events up to 5.9 ms late), ISL 1024 at concurrency 16 kept its
//! throughput within 0.1% but its median TTFT rose 54% and its TPOT fell 7%, while the event
//! lateness stayed under the bound that judges a run: a distortion nothing would have reported.
//! Restarting shifts the whole schedule with the late step, so every request still joins the
//! step it would have, and the time lost is counted and judged.
//!
//! [`Scheduler::run_stepped`] drives the same scheduler on the stepped clock ([`crate::stepped`]):
//! it never sleeps, and plans each step when the window after the one before has closed, so no
//! step can be late and no time is lost.

use crate::engine::{Admission, Emit, EngineStats, FinishReason};
use crate::lateness::STEP_TOLERANCE;
use crate::stepped::{Phases, SteppedClock, WINDOW_TIMEOUT};
use crate::timing::EngineParams;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

struct Seq {
    /// When the request reached the server: it can join only steps that start later.
    arrival: Instant,
    prompt: u64,
    prefilled: u64,
    generated: u64,
    limit: u64,
    reason: FinishReason,
    reserved: u64,
    tx: mpsc::UnboundedSender<Emit>,
    /// Its announced position, for the stepped clock's closed loop.
    position: Option<u64>,
}

impl Seq {
    /// Emits the next token; a client that went away ends the sequence. Whether it was sent.
    fn emit(&mut self, due: Instant) -> bool {
        self.generated += 1;
        let finish = (self.generated >= self.limit).then_some(self.reason);
        let sent = self.tx.send(Emit::Token(due, finish)).is_ok();
        if !sent {
            self.generated = self.limit;
        }
        sent
    }
}

/// The batching state.
pub(crate) struct Scheduler {
    params: EngineParams,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    kv_used: u64,
    /// Announced positions of the sequences that ended since [`Scheduler::take_ended`].
    ended: Vec<u64>,
    /// On the stepped clock, steps take their modelled time: no time scale applies.
    stepped: bool,
}

/// One planned step.
pub(crate) struct Plan {
    /// (index into running, prefill tokens) for sequences prefilling this step.
    prefill: Vec<(usize, u64)>,
    prefill_tokens: u64,
    decode: u64,
    context: u64,
}

impl Scheduler {
    pub(crate) fn new(params: EngineParams, stats: Arc<EngineStats>) -> Self {
        Self {
            params,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv_used: 0,
            ended: Vec::new(),
            stepped: false,
        }
    }

    /// Runs until every sender of `rx` is gone.
    pub(crate) fn run(mut self, rx: &Receiver<Admission>) {
        if let Some(path) = crate::engine::ThreadTimes::own_path() {
            let _ = self.stats.engine_thread.set(path);
        }
        let mut step_start = Instant::now();
        loop {
            if self.is_idle() {
                let Ok(a) = rx.recv() else { return };
                self.enqueue(a);
            }
            while let Ok(a) = rx.try_recv() {
                self.enqueue(a);
            }
            if self.running.is_empty() {
                // Idle until the first waiting request arrived: the step starts at its arrival
                // (never before the last step ended), not when this thread got to it.
                if let Some(first) = self.waiting.front() {
                    step_start = step_start.max(first.arrival);
                }
            }
            let (plan, step_end) = self.begin_step(step_start);
            sleep_until(step_end);
            let now = Instant::now();
            let late = now.saturating_duration_since(step_end);
            self.stats.steps.note(late);
            self.finish_step(&plan, step_end);
            // Only the stepped clock counts what ended.
            self.ended.clear();
            // Behind schedule: the next step starts when we actually got here.
            step_start = if late > STEP_TOLERANCE {
                let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
                self.stats.lost_ns.fetch_add(ns, Ordering::Relaxed);
                now
            } else {
                step_end
            };
        }
    }

    /// Runs on the stepped clock ([`crate::stepped`]) until every sender of `rx` is gone: each
    /// step is computed at once, its tokens handed over, and the next planned when the window
    /// after it closes (every event read, every request the closed loop owes arrived).
    pub(crate) fn run_stepped(mut self, rx: &Receiver<Admission>, clock: &SteppedClock) {
        if let Some(path) = crate::engine::ThreadTimes::own_path() {
            let _ = self.stats.engine_thread.set(path);
        }
        clock.attach(std::thread::current());
        self.stepped = true;
        let mut modelled = Instant::now();
        clock.open_window(modelled);
        let mut owed = Owed::default();
        loop {
            // The window of the step that ended at `modelled`.
            let mut arrived = 0u64;
            let mut deadline = None;
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(mut a) => {
                            // In modelled time it arrives just after the next step begins, in
                            // its order among this window's arrivals.
                            arrived += 1;
                            a.request.arrival = modelled + Duration::from_nanos(arrived);
                            owed.arrived(a.request.position, clock);
                            self.enqueue(a);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                owed.ended(&self.take_ended(), clock);
                let waiting_on_client = !clock.all_read() || owed.count() > 0;
                if !waiting_on_client && !self.is_idle() {
                    break;
                }
                if self.is_idle() && owed.count() == 0 {
                    // Nothing to plan and nothing owed: wait for a request, however long.
                    deadline = None;
                    std::thread::park_timeout(IDLE_PARK);
                    continue;
                }
                let until = *deadline.get_or_insert_with(|| Instant::now() + WINDOW_TIMEOUT);
                let now = Instant::now();
                if now >= until {
                    tracing::warn!(
                        "stepped clock: a window waited {WINDOW_TIMEOUT:?} for the client (events \
                         unread: {}, requests owed: {}) and goes on without it",
                        !clock.all_read(),
                        owed.count()
                    );
                    clock.note_timeout();
                    owed.forgive();
                    if self.is_idle() {
                        continue;
                    }
                    break;
                }
                std::thread::park_timeout(until - now);
            }
            let start = match self.waiting.front() {
                Some(first) if self.running.is_empty() => modelled.max(first.arrival),
                _ => modelled,
            };
            let (plan, end) = self.begin_step(start);
            self.stats.steps.note(Duration::ZERO);
            clock.open_window(end);
            let emitted = self.finish_step(&plan, end);
            clock.emitted.fetch_add(emitted, Ordering::SeqCst);
            modelled = end;
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Admits what fits, plans a step starting at `start` and tells newly prefilling sequences;
    /// returns the plan and the step's planned end.
    pub(crate) fn begin_step(&mut self, start: Instant) -> (Plan, Instant) {
        self.admit(start);
        let plan = self.plan();
        let took = self
            .params
            .step_time(plan.prefill_tokens, plan.decode, plan.context)
            .div_f64(if self.stepped {
                1.0
            } else {
                self.stats.time_scale()
            });
        for &(i, _) in &plan.prefill {
            if self.running[i].prefilled == 0 {
                let _ = self.running[i].tx.send(Emit::PrefillStart(start));
            }
        }
        (plan, start + took)
    }

    pub(crate) fn enqueue(&mut self, a: Admission) {
        let (limit, reason) = a.request.limit();
        let r = a.request;
        let seq = Seq {
            arrival: r.arrival,
            prompt: r.prompt_tokens.max(1),
            prefilled: 0,
            generated: 0,
            limit,
            reason,
            reserved: r.prompt_tokens + r.max_tokens,
            tx: a.tx,
            position: r.position,
        };
        // In arrival order (two requests handled on two threads may reach here swapped).
        let at = self
            .waiting
            .iter()
            .rposition(|s| s.arrival <= seq.arrival)
            .map_or(0, |i| i + 1);
        self.waiting.insert(at, seq);
    }

    /// Moves waiting sequences that arrived by `start` into the running set while slots and KV
    /// capacity allow.
    fn admit(&mut self, start: Instant) {
        let ended = &mut self.ended;
        self.waiting.retain(|s| {
            let gone = s.tx.is_closed();
            if gone {
                ended.extend(s.position);
            }
            !gone
        });
        while let Some(next) = self.waiting.front().filter(|s| s.arrival <= start) {
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

    /// Emits the step's tokens, all due at `step_end`, and retires finished sequences. The
    /// counters move first: a client that has a request's last token and then reads `/metrics`
    /// finds that token counted, however late this thread runs after the hand-over.
    /// Returns how many tokens reached a live stream.
    pub(crate) fn finish_step(&mut self, plan: &Plan, step_end: Instant) -> u64 {
        // Decode tokens for sequences that were past prefill when the step began.
        let prefilling: Vec<bool> = self
            .running
            .iter()
            .map(|s| s.prefilled < s.prompt)
            .collect();
        let decoded = prefilling.iter().filter(|p| !**p).count() as u64;
        let prefilled: u64 = plan.prefill.iter().map(|&(_, chunk)| chunk).sum();
        let first_tokens = plan
            .prefill
            .iter()
            .filter(|&&(i, chunk)| self.running[i].prefilled + chunk >= self.running[i].prompt)
            .count() as u64;
        self.stats
            .prompt_tokens_total
            .fetch_add(prefilled, Ordering::Relaxed);
        self.stats
            .generation_tokens_total
            .fetch_add(decoded + first_tokens, Ordering::Relaxed);
        let mut emitted = 0;
        for (s, _) in self
            .running
            .iter_mut()
            .zip(&prefilling)
            .filter(|(_, p)| !**p)
        {
            emitted += u64::from(s.emit(step_end));
        }
        for &(i, chunk) in &plan.prefill {
            let s = &mut self.running[i];
            s.prefilled += chunk;
            if s.prefilled >= s.prompt {
                emitted += u64::from(s.emit(step_end));
            }
        }
        let mut freed = 0;
        let ended = &mut self.ended;
        self.running.retain(|s| {
            let done = s.generated >= s.limit;
            if done {
                freed += s.reserved;
                ended.extend(s.position);
            }
            !done
        });
        self.kv_used -= freed;
        self.publish();
        emitted
    }

    /// The announced positions of the sequences that ended since the last call.
    fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ended)
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

/// How long the stepped clock's idle engine sleeps between looks at its queue (a request's
/// admission wakes it at once; this only bounds a missed wake-up).
const IDLE_PARK: Duration = Duration::from_millis(100);

/// What the closed loop of the latest announcement owes the stepped clock: requests that must
/// arrive before the next step is planned, as they would have, in real time, before the step
/// after it began.
#[derive(Debug, Default)]
struct Owed {
    generation: u64,
    /// Per phase: requests arrived, requests ended.
    arrived: Vec<u64>,
    ended: Vec<u64>,
    /// Owed requests given up on (a window timed out): no longer waited for.
    forgiven: Vec<u64>,
    phases: Phases,
}

impl Owed {
    /// Starts counting again when the phases changed.
    fn sync(&mut self, clock: &SteppedClock) {
        let phases = clock.phases();
        if phases.generation != self.generation || self.arrived.len() != phases.list.len() {
            self.generation = phases.generation;
            self.arrived = vec![0; phases.list.len()];
            self.ended = vec![0; phases.list.len()];
            self.forgiven = vec![0; phases.list.len()];
            self.phases = phases;
        }
    }

    fn arrived(&mut self, position: Option<u64>, clock: &SteppedClock) {
        self.sync(clock);
        if let Some(i) = position.and_then(|p| self.phases.of(p)) {
            self.arrived[i] += 1;
        }
    }

    fn ended(&mut self, positions: &[u64], clock: &SteppedClock) {
        self.sync(clock);
        for &p in positions {
            if let Some(i) = self.phases.of(p) {
                self.ended[i] += 1;
            }
        }
    }

    /// Requests owed now: in each phase that began, its first `concurrency` and one per request
    /// ended, up to its size.
    fn count(&self) -> u64 {
        self.phases
            .list
            .iter()
            .enumerate()
            .filter(|(i, _)| self.arrived[*i] > 0)
            .map(|(i, p)| {
                let due = (p.concurrency + self.ended[i]).min(p.requests);
                due.saturating_sub(self.arrived[i] + self.forgiven[i])
            })
            .sum()
    }

    /// Stops waiting for what is owed now.
    fn forgive(&mut self) {
        for i in 0..self.phases.list.len() {
            if self.arrived[i] > 0 {
                let p = self.phases.list[i];
                let due = (p.concurrency + self.ended[i]).min(p.requests);
                self.forgiven[i] = due.saturating_sub(self.arrived[i]);
            }
        }
    }
}

/// Sleeps the thread until `deadline` (no-op when it has passed).
fn sleep_until(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left > Duration::ZERO {
        std::thread::sleep(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Request;

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

    fn admit(s: &mut Scheduler, prompt: u64, max: u64) -> mpsc::UnboundedReceiver<Emit> {
        let (tx, rx) = mpsc::unbounded_channel();
        let request = Request {
            prompt_tokens: prompt,
            max_tokens: max,
            eos_after: None,
            arrival: Instant::now(),
            position: None,
        };
        s.enqueue(Admission { request, tx });
        rx
    }

    /// Runs `steps` steps back to back from `start`, as the thread does when on time.
    fn run_steps(s: &mut Scheduler, start: Instant, steps: usize) {
        let mut t = start;
        for _ in 0..steps {
            let (plan, end) = s.begin_step(t);
            s.finish_step(&plan, end);
            t = end;
        }
    }

    fn tokens(rx: &mut mpsc::UnboundedReceiver<Emit>) -> (Vec<Instant>, Option<FinishReason>) {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Emit::Token(t, finish) = e {
                out.push(t);
                if finish.is_some() {
                    return (out, finish);
                }
            }
        }
        (out, None)
    }

    fn scheduler() -> (Scheduler, Arc<EngineStats>) {
        let stats = Arc::new(EngineStats::default());
        (Scheduler::new(params(), Arc::clone(&stats)), stats)
    }

    #[test]
    fn chunked_prefill_then_one_token_per_step() {
        let (mut s, stats) = scheduler();
        let mut rx = admit(&mut s, 250, 4);
        let start = Instant::now();
        run_steps(&mut s, start, 10);
        // 250 prompt tokens at 100 per step: prefill ends with step 3; then 3 more tokens.
        let (toks, reason) = tokens(&mut rx);
        assert_eq!(toks.len(), 4);
        assert_eq!(reason, Some(FinishReason::Length));
        assert_eq!(toks[0] - start, Duration::from_millis(30));
        let gaps: Vec<Duration> = toks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g == Duration::from_millis(10)),
            "{gaps:?}"
        );
        assert_eq!(stats.prompt_tokens_total.load(Ordering::Relaxed), 250);
        assert_eq!(stats.generation_tokens_total.load(Ordering::Relaxed), 4);
        assert!(s.is_idle());
    }

    #[test]
    fn sequence_limit_makes_the_third_request_wait() {
        let (mut s, _) = scheduler();
        let mut a = admit(&mut s, 10, 5);
        let mut b = admit(&mut s, 10, 5);
        let mut c = admit(&mut s, 10, 5);
        run_steps(&mut s, Instant::now(), 20);
        let (ta, _) = tokens(&mut a);
        let (tb, _) = tokens(&mut b);
        let (tc, _) = tokens(&mut c);
        assert_eq!(ta[0], tb[0]);
        // c starts only after a and b finish (max_num_seqs = 2).
        assert!(tc[0] > *ta.last().expect("tokens"));
    }

    #[test]
    fn a_request_joins_only_steps_that_start_after_it_arrived() {
        // Whatever the thread's own delay in planning, a request that arrived after a step's
        // planned start waits for the next one: the schedule depends on arrivals alone.
        let (mut s, _) = scheduler();
        let start = Instant::now();
        let mut early = admit(&mut s, 10, 3);
        let (tx, mut late) = mpsc::unbounded_channel();
        let request = Request {
            prompt_tokens: 10,
            max_tokens: 3,
            eos_after: None,
            arrival: start + Duration::from_millis(1),
            position: None,
        };
        s.enqueue(Admission { request, tx });
        let (plan, end) = s.begin_step(start + Duration::from_micros(500));
        s.finish_step(&plan, end);
        run_steps(&mut s, end, 5);
        let (first, _) = tokens(&mut early);
        let (second, _) = tokens(&mut late);
        assert_eq!(second[0] - first[0], Duration::from_millis(10));
    }

    #[test]
    fn time_scale_divides_every_step() {
        let stats = Arc::new(EngineStats::default());
        stats.set_time_scale(4.0);
        let mut s = Scheduler::new(params(), stats);
        let mut rx = admit(&mut s, 10, 3);
        let start = Instant::now();
        run_steps(&mut s, start, 5);
        let (toks, _) = tokens(&mut rx);
        assert_eq!(toks[0] - start, Duration::from_micros(2_500));
        assert_eq!(toks[2] - toks[1], Duration::from_micros(2_500));
    }

    #[test]
    fn the_thread_keeps_its_schedule_and_counts_every_step() {
        // Real time: a 100-step request at 2 ms per step. The thread's sleeps are precise, so on
        // an idle machine no step is late; on a busy one the lateness is counted, never hidden.
        let mut p = params();
        p.base_ms = 2.0;
        let stats = Arc::new(EngineStats::default());
        let engine = crate::engine::Engine::start(
            &crate::timing::Timing::Batching(p),
            1.0,
            Arc::clone(&stats),
            None,
        );
        let crate::engine::Engine::Batching { tx, .. } = &engine else {
            panic!("a batching engine");
        };
        let (etx, mut rx) = mpsc::unbounded_channel();
        let request = Request {
            prompt_tokens: 10,
            max_tokens: 100,
            eos_after: None,
            arrival: Instant::now(),
            position: None,
        };
        tx.send(Admission { request, tx: etx })
            .expect("engine runs");
        let mut got = 0;
        while let Some(e) = rx.blocking_recv() {
            if let Emit::Token(_, finish) = e {
                got += 1;
                if finish.is_some() {
                    break;
                }
            }
        }
        assert_eq!(got, 100);
        let report = stats.report();
        assert_eq!(report.steps.count, 100, "{report:?}");
        let lost = report.lost_seconds;
        // Every late step restarted the schedule, and only late steps lose time.
        assert_eq!(report.steps.late == 0, lost == 0.0, "{report:?}");
        if cfg!(target_os = "linux") {
            let thread = report
                .engine_thread
                .expect("Linux reports the thread's times");
            // 100 steps of planning and emitting one token: well under a millisecond each.
            assert!(thread.cpu_seconds < 0.05, "{thread:?}");
            // Lateness comes from the machine (the thread waited for a core) plus sleep
            // precision, never from the engine's own work.
            assert!(
                report.steps.sum_seconds <= thread.runqueue_wait_seconds + 100.0 * 0.000_5,
                "{report:?}"
            );
        }
    }
}
