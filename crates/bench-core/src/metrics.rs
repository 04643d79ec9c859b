//! Run figures: pure functions from request records to the numbers a result reports.
//!
//! Definitions are in docs/metrics.md. In short: failures never count as completed and never
//! enter a latency figure; duration runs from the first measured send to the last measured end;
//! TPOT divides decode time by output tokens minus one (tokens, not events); ITL is per event.

use crate::config::Slo;
use crate::record::{RequestRecord, TokenCountSource};
use crate::stats::Distribution;
pub use bench_result::sections::{FailureGroup, PromptCheck, Violation};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every figure of one run.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub duration: Duration,
    pub completed: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, FailureGroup>,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    /// Prompt tokens of every request sent, completed or not (what a server counts).
    pub sent_input_tokens: u64,
    pub request_throughput: f64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Distribution,
    pub tpot_ms: Distribution,
    pub itl_ms: Distribution,
    /// Per-token gaps ([`RequestRecord::token_gaps`]) over the completed requests whose tokens
    /// per event are known; `None` when none are.
    pub itl_per_token_ms: Option<Distribution>,
    pub e2el_ms: Distribution,
    /// 1000 / median TPOT (ms): tokens per second per user; 0 when TPOT is undefined.
    pub interactivity: f64,
    pub good_completed: usize,
    pub request_goodput: f64,
    /// vLLM's figure: most output tokens in one 1-second bucket.
    pub max_output_tokens_per_s: f64,
    /// vLLM's figure: most requests active in one 1-second bucket.
    pub max_concurrent_requests: usize,
    /// Exact peak of requests in flight at once.
    pub peak_concurrency: usize,
    pub output_events: u64,
    pub multi_token_events: u64,
    /// Output events whose token count is known (the base of the multi-token share).
    pub events_with_token_counts: u64,
    /// Output events read together with the next event of their stream, so stamped with its
    /// arrival: either the server sent them at once, or the client fell behind the stream.
    pub events_sharing_a_read: u64,
    /// Completed requests whose output count came from tokenizing text (no usage sent).
    pub usage_fallbacks: usize,
    /// Completed requests that produced fewer tokens than asked with `ignore_eos` on.
    pub short_outputs: usize,
    pub prompt_check: PromptCheck,
    /// Lateness of sends against the arrival schedule (rate mode), ms.
    pub send_lag_ms: Option<Distribution>,
    /// In a closed loop (a concurrency limit, no rate), the client's turnaround: from a request's
    /// end (its last event's arrival) to the send of the request that took its slot, ms
    /// ([`turnarounds`]).
    pub turnaround_ms: Option<Distribution>,
    /// With a concurrency limit, the figures over the window in which the run stayed at it.
    pub steady_state: Option<crate::steady::SteadyState>,
    /// Completed streams that broke a promise of the protocol, by kind ([`INTEGRITY_KINDS`]).
    pub integrity: BTreeMap<&'static str, Violation>,
}

/// A check on a completed request (and whether the run asked for `ignore_eos`): true when the
/// request broke the promise.
type Check = fn(&RequestRecord, bool) -> bool;

/// The kinds of [`RunMetrics::integrity`], named as the result file names them, with their checks.
pub const INTEGRITY_KINDS: [(&str, Check); 5] = [
    ("finish_reason_missing", |r, _| !r.stream.finish_reason),
    ("usage_missing", |r, _| !r.stream.usage),
    ("prompt_tokens_mismatch", |r, _| {
        r.server_prompt_tokens.is_some_and(|n| n != r.input_tokens)
    }),
    // Only a count the server gave (usage or token ids) is evidence: the tokenizer's re-count of
    // the text (usage missing, flagged apart) need not match the tokens sent.
    ("output_tokens_mismatch", |r, ignore_eos| {
        ignore_eos
            && r.token_source != TokenCountSource::Tokenized
            && r.output_tokens != r.requested_output_tokens
    }),
    ("events_after_done", |r, _| r.stream.events_after_done > 0),
];

/// Counts every kind over the completed requests `ok`, zeros included, each with the first
/// request in sending order that broke it.
fn integrity(ok: &[&RequestRecord], ignore_eos: bool) -> BTreeMap<&'static str, Violation> {
    let mut by_send: Vec<&RequestRecord> = ok.to_vec();
    by_send.sort_by_key(|r| (r.sent, r.index));
    INTEGRITY_KINDS
        .iter()
        .map(|(kind, broke)| {
            let mut v = Violation::default();
            for r in by_send.iter().filter(|r| broke(r, ignore_eos)) {
                v.count += 1;
                v.example_request_id
                    .get_or_insert_with(|| r.request_id.clone());
            }
            (*kind, v)
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Computes every figure from the measured records.
pub fn compute(
    records: &[RequestRecord],
    percentiles: &[f64],
    slo: &Slo,
    ignore_eos: bool,
) -> RunMetrics {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.is_success()).collect();
    let duration = run_duration(records);
    let secs = duration.as_secs_f64();
    let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let latency = Latencies::of(&ok, percentiles);
    let streams = StreamCounts::of(&ok, ignore_eos);
    let total_input_tokens = ok.iter().map(|r| r.input_tokens).sum();
    let total_output_tokens = ok.iter().map(|r| r.output_tokens).sum();
    let good_completed = ok.iter().filter(|r| meets(r, slo)).count();
    let (max_output_tokens_per_s, max_concurrent_requests) = vllm_peaks(&ok);
    let lags: Vec<f64> = records
        .iter()
        .filter_map(|r| r.send_lag())
        .map(ms)
        .collect();

    RunMetrics {
        duration,
        completed: ok.len(),
        failed: records.len() - ok.len(),
        failures: failure_groups(records),
        total_input_tokens,
        total_output_tokens,
        sent_input_tokens: records.iter().map(|r| r.input_tokens).sum(),
        request_throughput: per_sec(ok.len() as f64),
        input_throughput: per_sec(total_input_tokens as f64),
        output_throughput: per_sec(total_output_tokens as f64),
        total_token_throughput: per_sec((total_input_tokens + total_output_tokens) as f64),
        interactivity: latency.interactivity(),
        ttft_ms: latency.ttft,
        tpot_ms: latency.tpot,
        itl_ms: latency.itl,
        itl_per_token_ms: token_gaps(&ok, percentiles),
        e2el_ms: latency.e2el,
        // With no SLO given every completed request meets them all.
        good_completed,
        request_goodput: per_sec(good_completed as f64),
        max_output_tokens_per_s,
        max_concurrent_requests,
        peak_concurrency: peak_concurrency(records),
        output_events: streams.output_events,
        multi_token_events: streams.multi_token_events,
        events_with_token_counts: streams.events_with_token_counts,
        events_sharing_a_read: streams.events_sharing_a_read,
        usage_fallbacks: streams.usage_fallbacks,
        short_outputs: streams.short_outputs,
        prompt_check: prompt_check(&ok),
        send_lag_ms: (!lags.is_empty()).then(|| Distribution::from_samples(&lags, percentiles)),
        turnaround_ms: None,
        steady_state: None,
        integrity: integrity(&ok, ignore_eos),
    }
}

/// The completed requests' latency distributions, ms.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub ttft: Distribution,
    pub tpot: Distribution,
    pub itl: Distribution,
    pub e2el: Distribution,
}

impl Latencies {
    /// The distributions over `ok`, which are completed requests.
    pub fn of(ok: &[&RequestRecord], percentiles: &[f64]) -> Self {
        let dist = |samples: Vec<f64>| Distribution::from_samples(&samples, percentiles);
        Self {
            ttft: dist(ok.iter().filter_map(|r| r.ttft()).map(ms).collect()),
            tpot: dist(ok.iter().filter_map(|r| r.tpot()).map(ms).collect()),
            itl: dist(ok.iter().flat_map(|r| r.itls()).map(ms).collect()),
            e2el: dist(ok.iter().filter_map(|r| r.e2el()).map(ms).collect()),
        }
    }

    /// 1000 / median TPOT: tokens per second per user; 0 when TPOT is undefined.
    pub fn interactivity(&self) -> f64 {
        if self.tpot.median > 0.0 {
            1000.0 / self.tpot.median
        } else {
            0.0
        }
    }
}

/// What the completed streams carried, counted.
struct StreamCounts {
    output_events: u64,
    multi_token_events: u64,
    events_with_token_counts: u64,
    events_sharing_a_read: u64,
    usage_fallbacks: usize,
    short_outputs: usize,
}

impl StreamCounts {
    fn of(ok: &[&RequestRecord], ignore_eos: bool) -> Self {
        Self {
            output_events: ok.iter().map(|r| r.output_events.len() as u64).sum(),
            multi_token_events: ok.iter().map(|r| u64::from(r.multi_token_events)).sum(),
            events_with_token_counts: ok
                .iter()
                .filter(|r| r.event_tokens.is_known())
                .map(|r| r.output_events.len() as u64)
                .sum(),
            events_sharing_a_read: ok
                .iter()
                .map(|r| r.output_events.windows(2).filter(|w| w[0] == w[1]).count() as u64)
                .sum(),
            usage_fallbacks: ok
                .iter()
                .filter(|r| r.token_source != TokenCountSource::Usage)
                .count(),
            short_outputs: ok
                .iter()
                .filter(|r| ignore_eos && r.output_tokens < r.requested_output_tokens)
                .count(),
        }
    }
}

/// Per-token gaps of the completed requests whose tokens per event are known, ms.
fn token_gaps(ok: &[&RequestRecord], percentiles: &[f64]) -> Option<Distribution> {
    let gaps: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.token_gaps())
        .flatten()
        .map(ms)
        .collect();
    let known = ok.iter().any(|r| r.event_tokens.is_known());
    known.then(|| Distribution::from_samples(&gaps, percentiles))
}

/// The client's turnarounds in a closed loop of `slots` concurrent requests, ms: the k-th send
/// after the first `slots` took the slot of the k-th request to end (the limit's queue is
/// first in, first out), so each gap is that send minus that end. A request ends when its last
/// event arrived (the server's last word), or when it failed.
pub fn turnarounds(records: &[RequestRecord], slots: usize) -> Vec<f64> {
    let mut ends: Vec<Instant> = records
        .iter()
        .map(|r| match (r.is_success(), r.output_events.last()) {
            (true, Some(last)) => *last,
            _ => r.ended,
        })
        .collect();
    ends.sort();
    let mut sends: Vec<(usize, Instant)> = records.iter().map(|r| (r.index, r.sent)).collect();
    sends.sort();
    sends
        .iter()
        .skip(slots)
        .zip(&ends)
        .map(|((_, sent), end)| ms(sent.saturating_duration_since(*end)))
        .collect()
}

/// First send to last end over all measured requests.
fn run_duration(records: &[RequestRecord]) -> Duration {
    let first = records.iter().map(|r| r.sent).min();
    let last = records.iter().map(|r| r.ended).max();
    match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    }
}

/// DistServe goodput: every SLO given holds at once (TPOT 0 for single-token replies, as vLLM).
fn meets(r: &RequestRecord, slo: &Slo) -> bool {
    let within = |limit: Option<f64>, value: Option<Duration>| {
        limit.is_none_or(|l| value.map_or(0.0, ms) <= l)
    };
    within(slo.ttft_ms, r.ttft()) && within(slo.tpot_ms, r.tpot()) && within(slo.e2el_ms, r.e2el())
}

fn failure_groups(records: &[RequestRecord]) -> BTreeMap<String, FailureGroup> {
    let mut groups: BTreeMap<String, FailureGroup> = BTreeMap::new();
    for r in records {
        if let Err(reason) = &r.outcome {
            groups
                .entry(reason.group())
                .and_modify(|g| g.count += 1)
                .or_insert_with(|| FailureGroup {
                    count: 1,
                    example: reason.to_string(),
                });
        }
    }
    groups
}

/// vLLM's per-second peaks over completed requests: output tokens landing in each 1-second
/// bucket from the earliest send (an event's tokens spread evenly when a request's events carried
/// more than one token each), and requests active in each bucket.
fn vllm_peaks(ok: &[&RequestRecord]) -> (f64, usize) {
    let Some(t0) = ok.iter().map(|r| r.sent).min() else {
        return (0.0, 0);
    };
    let end = ok
        .iter()
        .map(|r| r.e2el().map_or(r.sent, |d| r.sent + d))
        .max();
    let buckets = end.map_or(0.0, |e| (e - t0).as_secs_f64()).ceil() as usize + 1;
    let mut tokens = vec![0.0; buckets];
    let mut active = vec![0usize; buckets];
    let bucket = |t: Instant| ((t - t0).as_secs_f64() as usize).min(buckets - 1);
    for r in ok {
        let per_event = r.output_tokens as f64 / r.output_events.len().max(1) as f64;
        for t in &r.output_events {
            tokens[bucket(*t)] += per_event;
        }
        let last = r.output_events.last().copied().unwrap_or(r.sent);
        for slot in &mut active[bucket(r.sent)..=bucket(last)] {
            *slot += 1;
        }
    }
    (
        tokens.iter().copied().fold(0.0, f64::max),
        active.iter().copied().max().unwrap_or(0),
    )
}

/// Most requests in flight at one instant (sends and ends swept in time order).
fn peak_concurrency(records: &[RequestRecord]) -> usize {
    let mut edges: Vec<(Instant, i32)> = records
        .iter()
        .flat_map(|r| [(r.sent, 1), (r.ended, -1)])
        .collect();
    // Ends sort before sends at the same instant.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    peak as usize
}

fn prompt_check(ok: &[&RequestRecord]) -> PromptCheck {
    let diffs: Vec<i64> = ok
        .iter()
        .filter_map(|r| {
            r.server_prompt_tokens
                .map(|s| s as i64 - r.input_tokens as i64)
        })
        .collect();
    PromptCheck {
        reported: diffs.len() as u64,
        mismatched: diffs.iter().filter(|d| **d != 0).count() as u64,
        max_abs_diff: diffs.iter().map(|d| d.unsigned_abs()).max().unwrap_or(0),
        mean_diff: if diffs.is_empty() {
            0.0
        } else {
            diffs.iter().sum::<i64>() as f64 / diffs.len() as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FailureReason;

    fn rec(t0: Instant, send_ms: u64, events_ms: &[u64], tokens: u64) -> RequestRecord {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        RequestRecord {
            index: 0,
            request_id: "inferperf-m0".into(),
            scheduled: None,
            sent: at(send_ms),
            output_events: events_ms.iter().map(|m| at(send_ms + m)).collect(),
            multi_token_events: 0,
            event_tokens: crate::record::EventTokens::OnePerEvent,
            ended: at(send_ms + events_ms.last().copied().unwrap_or(0) + 1),
            input_tokens: 100,
            server_prompt_tokens: Some(101),
            output_tokens: tokens,
            token_source: TokenCountSource::Usage,
            requested_output_tokens: 4,
            stream: crate::record::StreamMarks {
                finish_reason: true,
                usage: true,
                events_after_done: 0,
            },
            outcome: Ok(()),
        }
    }

    #[test]
    fn turnarounds_pair_each_send_past_the_limit_with_the_end_that_freed_its_slot() {
        // Two slots: requests 0 and 1 start at once and end (last event) at 30 and 50 ms;
        // request 2 is sent at 31 ms into 0's slot, request 3 at 53 ms into 1's.
        let t0 = Instant::now();
        let mut rs = vec![
            rec(t0, 0, &[10, 30], 2),
            rec(t0, 0, &[20, 50], 2),
            rec(t0, 31, &[30], 1),
            rec(t0, 53, &[10], 1),
        ];
        for (i, r) in rs.iter_mut().enumerate() {
            r.index = i;
        }
        let gaps = turnarounds(&rs, 2);
        assert_eq!(gaps.len(), 2);
        assert!(
            (gaps[0] - 1.0).abs() < 1e-9 && (gaps[1] - 3.0).abs() < 1e-9,
            "{gaps:?}"
        );
        // With no limit (or a limit the run never reached) there is no closed loop to time.
        assert!(turnarounds(&rs, 4).is_empty());
    }

    #[test]
    fn figures_follow_the_definitions() {
        let t0 = Instant::now();
        let a = rec(t0, 0, &[100, 110, 120, 130], 4);
        let b = rec(t0, 0, &[200, 220, 240, 260], 4);
        let mut failed = rec(t0, 0, &[5], 0);
        failed.outcome = Err(FailureReason::HttpStatus {
            status: 500,
            message: "boom".into(),
        });
        failed.ended = t0 + Duration::from_millis(1000);
        let slo = Slo {
            ttft_ms: Some(150.0),
            ..Slo::default()
        };
        let m = compute(&[a, b, failed], &[50.0, 99.0], &slo, true);
        assert_eq!((m.completed, m.failed), (2, 1));
        assert_eq!(m.duration, Duration::from_millis(1000));
        assert_eq!(m.total_input_tokens, 200);
        assert_eq!(m.total_output_tokens, 8);
        assert!((m.output_throughput - 8.0).abs() < 1e-9);
        assert!((m.ttft_ms.mean - 150.0).abs() < 1e-6);
        // TPOT: (130-100)/3 = 10 and (260-200)/3 = 20.
        assert!((m.tpot_ms.median - 15.0).abs() < 1e-6);
        assert!((m.interactivity - 1000.0 / 15.0).abs() < 1e-6);
        assert_eq!(m.itl_ms.count, 6);
        assert_eq!(m.good_completed, 1);
        assert_eq!(m.failures["http_500"].count, 1);
        assert_eq!(m.failures["http_500"].example, "HTTP 500: boom");
        assert_eq!(m.prompt_check.mismatched, 2);
        assert_eq!(m.peak_concurrency, 3);
        assert_eq!(m.short_outputs, 0);
    }

    #[test]
    fn events_stamped_by_one_read_are_counted() {
        let t0 = Instant::now();
        // Events 2-4 came in one read, as did 5-6: three of them carry a later event's time.
        let a = rec(t0, 0, &[10, 20, 20, 20, 30, 30], 6);
        let b = rec(t0, 0, &[10, 20, 30], 3);
        let m = compute(&[a, b], &[99.0], &Slo::default(), false);
        assert_eq!((m.output_events, m.events_sharing_a_read), (9, 3));
    }

    #[test]
    fn no_slo_means_every_completed_request_is_good() {
        let t0 = Instant::now();
        let m = compute(&[rec(t0, 0, &[10, 20], 2)], &[99.0], &Slo::default(), false);
        assert_eq!(m.good_completed, 1);
    }

    #[test]
    fn peaks_bucket_by_second_like_vllm() {
        let t0 = Instant::now();
        let a = rec(t0, 0, &[100, 200, 1100, 1200], 4);
        let b = rec(t0, 500, &[100, 200], 2);
        let (tok, conc) = vllm_peaks(&[&a, &b]);
        assert_eq!(tok, 4.0);
        assert_eq!(conc, 2);
    }

    #[test]
    fn empty_run_reports_zeros_not_nan() {
        let m = compute(&[], &[50.0], &Slo::default(), true);
        assert_eq!(m.request_throughput, 0.0);
        assert_eq!(m.interactivity, 0.0);
        assert!(m.ttft_ms.mean.is_finite());
    }
}
