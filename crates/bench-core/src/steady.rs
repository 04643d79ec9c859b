//! The steady state of a run with a concurrency limit: the window in which the requests in flight
//! stayed at the limit, and the run's figures over that window alone.
//!
//! Whole-run figures include the ramp-up (the first wave of requests arrives at once and queues
//! for prefill) and the drain (the last requests run in an emptying batch, decoding faster and
//! producing less). With prompts at 10 x the concurrency both weigh heavily. The window is defined
//! in docs/metrics.md ("Steady state"); in short:
//! - *at the limit* means at least `level = max(1, floor(0.95 x limit))` requests in flight, so a
//!   closed loop's slot, empty between a request's end and the next send, does not end it;
//! - the window runs from the first instant the run is at the limit to the last instant it
//!   leaves it, and `held_share` says for how much of that time it was there;
//! - a request is *inside* when it was sent and ended within the window; latencies are over the
//!   completed requests inside, throughputs count what happened inside: output tokens of events
//!   that arrived in it, prompt tokens of requests whose first token arrived in it (their prefill
//!   ended there), completed requests that ended in it.

use crate::metrics::Latencies;
use crate::record::RequestRecord;
use std::time::{Duration, Instant};

/// A window shorter than this many completed requests inside, or than the limit itself (every
/// slot turned over once), is reported but not trusted.
pub const MIN_REQUESTS: usize = 10;

/// The steady state's bounds and figures.
#[derive(Debug, Clone)]
pub struct SteadyState {
    /// Requests in flight that count as at the limit.
    pub level: usize,
    /// The window, from the run's first send.
    pub start: Duration,
    pub end: Duration,
    /// Share of the window with at least `level` requests in flight.
    pub held_share: f64,
    /// Completed requests sent and ended inside the window.
    pub requests: usize,
    /// `requests` over the run's completed requests.
    pub request_share: f64,
    /// At least [`MIN_REQUESTS`] and at least the limit's worth of requests inside.
    pub trusted: bool,
    pub request_throughput: f64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub latency: Latencies,
}

impl SteadyState {
    pub fn duration(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// The steady state of `records` under a limit of `limit` requests in flight; `None` when the run
/// never reached the limit's level or the window has no length.
pub fn window(records: &[RequestRecord], limit: usize, percentiles: &[f64]) -> Option<SteadyState> {
    let t0 = records.iter().map(|r| r.sent).min()?;
    let level = ((limit as f64 * 0.95).floor() as usize).max(1);
    let (start, end, held) = span_at_level(records, level)?;
    let secs = (end - start).as_secs_f64();
    let within = |t: Instant| t >= start && t <= end;
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.is_success()).collect();
    let inside: Vec<&RequestRecord> = ok
        .iter()
        .copied()
        .filter(|r| within(r.sent) && within(r.ended))
        .collect();
    let output_tokens: f64 = ok
        .iter()
        .map(|r| {
            let per_event = r.output_tokens as f64 / r.output_events.len().max(1) as f64;
            r.output_events.iter().filter(|t| within(**t)).count() as f64 * per_event
        })
        .sum();
    let input_tokens: u64 = ok
        .iter()
        .filter(|r| r.output_events.first().is_some_and(|t| within(*t)))
        .map(|r| r.input_tokens)
        .sum();
    let ended = ok.iter().filter(|r| within(r.ended)).count();
    Some(SteadyState {
        level,
        start: start - t0,
        end: end - t0,
        held_share: held.as_secs_f64() / secs,
        requests: inside.len(),
        request_share: inside.len() as f64 / ok.len().max(1) as f64,
        trusted: inside.len() >= MIN_REQUESTS.max(limit),
        request_throughput: ended as f64 / secs,
        input_throughput: input_tokens as f64 / secs,
        output_throughput: output_tokens / secs,
        latency: Latencies::of(&inside, percentiles),
    })
}

/// From the first instant at least `level` requests were in flight to the last instant that
/// stopped being so, and how long within it the level held. `None` when it never held for any
/// time.
fn span_at_level(records: &[RequestRecord], level: usize) -> Option<(Instant, Instant, Duration)> {
    let mut edges: Vec<(Instant, i64)> = records
        .iter()
        .flat_map(|r| [(r.sent, 1), (r.ended, -1)])
        .collect();
    // Ends sort before sends at the same instant: a slot handed over at once is not a peak.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let level = level as i64;
    let (mut in_flight, mut since) = (0i64, None::<Instant>);
    let (mut first, mut last, mut held) = (None, None, Duration::ZERO);
    for (at, step) in edges {
        let was_at = in_flight >= level;
        in_flight += step;
        match (was_at, in_flight >= level) {
            (false, true) => {
                first.get_or_insert(at);
                since = Some(at);
            }
            (true, false) => {
                if let Some(s) = since.take() {
                    held += at - s;
                }
                last = Some(at);
            }
            _ => {}
        }
    }
    let (first, last) = (first?, last?);
    (last > first).then_some((first, last, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TokenCountSource;

    /// A request sent at `send` ms with one event per token, 10 ms apart, the first at `send +
    /// ttft`, ending at its last event.
    fn rec(t0: Instant, send: u64, ttft: u64, tokens: u64) -> RequestRecord {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let events: Vec<Instant> = (0..tokens).map(|i| at(send + ttft + 10 * i)).collect();
        RequestRecord {
            index: 0,
            request_id: String::new(),
            scheduled: None,
            sent: at(send),
            ended: *events.last().expect("tokens > 0"),
            output_events: events,
            multi_token_events: 0,
            event_tokens: crate::record::EventTokens::OnePerEvent,
            input_tokens: 100,
            server_prompt_tokens: None,
            output_tokens: tokens,
            token_source: TokenCountSource::Usage,
            requested_output_tokens: tokens,
            stream: crate::record::StreamMarks::default(),
            outcome: Ok(()),
        }
    }

    /// Two slots in a closed loop: each runs requests back to back (1 ms turnaround) of 100 ms
    /// TTFT and 10 tokens (190 ms in all); the second slot starts 50 ms late and ends early.
    fn closed_loop(t0: Instant) -> Vec<RequestRecord> {
        let mut rs = Vec::new();
        for (slot_start, count) in [(0u64, 12u64), (50, 9)] {
            for i in 0..count {
                rs.push(rec(t0, slot_start + i * 191, 100, 10));
            }
        }
        rs
    }

    #[test]
    fn the_window_spans_the_plateau_and_leaves_ramp_and_drain_out() {
        let t0 = Instant::now();
        let rs = closed_loop(t0);
        let s = window(&rs, 2, &[50.0, 99.0]).expect("a plateau");
        // Level max(1, floor(1.9)) = 1: any request in flight counts, so the window is the run.
        assert_eq!(s.level, 1);
        assert_eq!(s.start, Duration::ZERO);
        assert_eq!(s.end, Duration::from_millis(11 * 191 + 190));

        // Level 19 is never reached: no window.
        assert!(window(&rs, 20, &[50.0, 99.0]).is_none());
        let s = window(&rs, 3, &[50.0, 99.0]).expect("a plateau");
        assert_eq!(s.level, 2);
        // Both slots busy: from the second slot's first send to its last end.
        assert_eq!(s.start, Duration::from_millis(50));
        assert_eq!(s.end, Duration::from_millis(50 + 8 * 191 + 190));
        // Inside: the first slot's requests sent at or after 50 ms and ended by 1,768 ms (sent
        // at 191 x 1..=8, the last ending at 1,718 ms) and all 9 of the second slot.
        assert_eq!(s.requests, 17);
        assert!((s.request_share - 17.0 / 21.0).abs() < 1e-12);
        assert!(s.trusted);
        // Each slot is empty 1 ms per turnaround: held below 100%, above 98%.
        assert!(
            s.held_share < 1.0 && s.held_share > 0.98,
            "{}",
            s.held_share
        );
        assert!((s.latency.ttft.median - 100.0).abs() < 1e-9);
        assert!((s.latency.tpot.median - 10.0).abs() < 1e-9);
        // Output: every event inside, tokens per event 1, over the window's 1,718 ms.
        let events_inside: usize = rs
            .iter()
            .map(|r| {
                r.output_events
                    .iter()
                    .filter(|t| **t >= t0 + s.start && **t <= t0 + s.end)
                    .count()
            })
            .sum();
        let secs = s.duration().as_secs_f64();
        assert!((s.output_throughput - events_inside as f64 / secs).abs() < 1e-9);
    }

    #[test]
    fn a_window_with_few_requests_inside_is_not_trusted() {
        let t0 = Instant::now();
        let rs: Vec<_> = (0..4).map(|_| rec(t0, 0, 100, 10)).collect();
        // Four at once: at the limit from the first send until the first end.
        let s = window(&rs, 4, &[50.0]).expect("a window");
        assert_eq!(s.requests, 4);
        assert!(!s.trusted);
        // A run that never reached the level has no window.
        assert!(window(&rs[..1], 4, &[50.0]).is_none());
        assert!(window(&[], 4, &[50.0]).is_none());
    }
}
