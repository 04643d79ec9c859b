//! What the client measures against what the simulator did.
//!
//! Both share one process and one monotonic clock here. For each request the client's send
//! precedes the server's arrival and the server's hand-over of an event precedes its arrival at
//! the client, so: measured TTFT >= server (first hand-over - arrival), and the excess is the
//! loopback's and (where the kernel gives no arrival stamps) the client's delay.
//!
//! These tests run on busy machines too, where another process may take a core away from the
//! client or the simulator for tens of milliseconds. What they hold the client to is what it
//! controls and what it says: an event it read on its own carries its arrival time (to within a
//! fraction of a millisecond in the median: a busy machine delays some writes of the simulator,
//! never most), and events it read together with the next one of their stream (it fell behind)
//! are counted, and the run's result then carries the warning that says so. How far behind a
//! busy machine puts it is not a bound of these tests; `just fidelity` measures that on a quiet
//! one (docs/performance.md).

use crate::support::{config, fixed_sim, run, shared_read_allowance_ms, truth_tpot_ms};
use bench_core::config::TransportKind;
use bench_core::RunReport;
use bench_result::sections::Timestamps;
use bench_sim::SimHandle;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// Overhead allowed per figure on a loaded 2-core machine running an unoptimised build.
const BOUND: Duration = Duration::from_millis(15);

/// One output event as the client stamped it against the simulator's hand-over.
#[derive(Debug, Clone, Copy)]
struct EventDelay {
    /// Client stamp - simulator hand-over, ms.
    ms: f64,
    /// Read together with the next event of its stream (both carry the later stamp).
    shared: bool,
}

/// Every output event's delay, matched by `x-request-id`, after checking that every event the
/// simulator sent was read and that none was stamped before the simulator handed it over, by
/// more than converting the kernel's wall-clock stamp to the monotonic clock may err
/// (`socket::CONVERSION_ERROR`: a busy machine can preempt the client between the two clocks'
/// reads).
fn event_delays(report: &RunReport, sim: &SimHandle) -> Vec<EventDelay> {
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| t.request_id.clone().map(|id| (id, t)))
        .collect();
    let mut delays = Vec::new();
    for r in &report.records {
        let t = &truth[&r.request_id];
        let sent: Vec<Instant> = t.output_sent().collect();
        assert_eq!(
            sent.len(),
            r.output_events.len(),
            "{}: every event the simulator sent was read",
            r.request_id
        );
        for (i, (read, handed)) in r.output_events.iter().zip(&sent).enumerate() {
            assert!(
                *read + bench_core::CONVERSION_ERROR >= *handed,
                "{}: stamped {:?} before the simulator handed it over",
                r.request_id,
                handed.saturating_duration_since(*read)
            );
            let next = r.output_events.get(i + 1);
            delays.push(EventDelay {
                ms: ms(*read - *handed),
                shared: next == Some(read),
            });
        }
        // The client's TTFT can only exceed the server's own (arrival to first hand-over).
        let server_ttft = sent[0] - t.arrival;
        assert!(r.ttft().expect("completed") >= server_ttft);
    }
    delays
}

/// Each request's first output event: client stamp - simulator hand-over, ms.
fn first_event_delays(report: &RunReport, sim: &SimHandle) -> Vec<f64> {
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| t.request_id.clone().map(|id| (id, t)))
        .collect();
    report
        .records
        .iter()
        .filter_map(|r| {
            let handed = truth[&r.request_id].output_sent().next()?;
            Some(ms(r
                .output_events
                .first()?
                .saturating_duration_since(handed)))
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The claims above, for one run: events read alone carry their arrival time; events read
/// together are late by at most the gap to the next one, and then the result says so.
fn assert_stamps_hold(label: &str, report: &RunReport, delays: &[EventDelay]) {
    let kernel = report.client.timestamps == Timestamps::Kernel;
    let alone: Vec<f64> = delays.iter().filter(|d| !d.shared).map(|d| d.ms).collect();
    let shared: Vec<&EventDelay> = delays.iter().filter(|d| d.shared).collect();
    let typical = median(alone.clone());
    eprintln!(
        "{label}: {} events, {} read alone (median delay {typical:.3} ms), {} read together; \
         runtime lag P99 {:.1} ms, max {:.1} ms, client-bound {}",
        delays.len(),
        alone.len(),
        shared.len(),
        report.client.runtime_lag_p99_ms,
        report.client.runtime_lag_max_ms,
        report.client.client_bound
    );
    // Kernel stamps are the arrival itself. Read stamps add the client's own wake-up: within
    // 2 ms, unless a busy machine held the client back, which the run then reports (its runtime
    // woke late: `client_bound`, with the P99 and the largest lateness in the warning), and the
    // stamps are late by no more than the warning states: the largest, once for each wake-up a
    // read takes. Not the P99: the probe wakes less often while the runtime is behind, so its
    // P99 can miss a spell in which most events waited.
    let wake_ups = f64::from(bench_core::judge::read_wake_ups(report.client.transport));
    let typical_bound = match (kernel, report.client.client_bound) {
        (true, _) => 0.5,
        (false, false) => 2.0,
        (false, true) => 2.0 + wake_ups * report.client.runtime_lag_max_ms,
    };
    assert!(
        typical < typical_bound,
        "{label}: events read alone trail the simulator by {typical:.3} ms in the median"
    );
    // An event read together with the next one carries that one's stamp: it is late by the gap
    // to it plus that one's own delay, which the rule above judges. What the client owes is to
    // say so.
    if shared.len() * 100 > delays.len() {
        assert!(
            report
                .client
                .warnings
                .iter()
                .any(|w| w.contains("read together")),
            "{label}: {} of {} events shared a read, and the result does not say so: {:?}",
            shared.len(),
            delays.len(),
            report.client.warnings
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_timing_agrees_with_the_simulators_truth() {
    for (transport, streams) in [
        (TransportKind::Native, 16),
        (TransportKind::Native, 256),
        (TransportKind::Standard, 16),
        (TransportKind::Standard, 256),
    ] {
        let sim = fixed_sim(50, 10, |_| {}).await;
        let mut c = config(&sim.url(), streams, 64, 20);
        c.max_concurrency = NonZeroUsize::new(streams);
        c.num_warmups = streams;
        c.transport = transport;
        let report = run(&c).await;
        assert_eq!(report.client.transport, transport);
        assert_eq!(
            report.config.transport, transport,
            "the run echoes its transport"
        );
        assert_eq!(
            report.metrics.completed, streams,
            "{:?}",
            report.metrics.failures
        );
        assert_eq!(
            sim.truth().len(),
            2 * streams,
            "warm-up and measured requests all reach the server"
        );
        let delays = event_delays(&report, &sim);
        assert_eq!(delays.len(), streams * 20);
        let label = format!("{transport:?} transport, {streams} streams");
        assert_stamps_hold(&label, &report, &delays);
        for r in &report.records {
            assert_eq!((r.output_tokens, r.output_events.len()), (20, 20));
        }
        // TPOT follows what the simulator did (10 ms apart unless the machine delayed it): the
        // first and last events' stamps are within a read of their arrival. Read stamps (the
        // standard transport) are late by up to how late the client's runtime woke, which the
        // run measures; spread over the 19 gaps between a request's first and last event.
        let truth = truth_tpot_ms(&report, &sim);
        let measured = report.metrics.tpot_ms.mean;
        let shared = shared_read_allowance_ms(&report, 10.0, 19.0);
        let read_lateness = if report.client.timestamps == Timestamps::Kernel {
            0.0
        } else {
            report.client.runtime_lag_max_ms / 19.0
        };
        let slack = 0.5 + shared + read_lateness;
        assert!(
            (measured - truth).abs() < slack,
            "{label}: TPOT {measured:.3} ms against the simulator's {truth:.3} ms"
        );
        sim.stop().await;
    }
}

/// Runs 8 streams of 10 tokens `itl_ms` apart from a simulator on its own runtime thread, against
/// a client on one thread that a hog blocks for `block_ms` out of every `block_ms + 20`. Returns
/// the report and each event's delay behind the simulator's write (ms).
fn busy_client(itl_ms: u64, block_ms: u64) -> (RunReport, Vec<EventDelay>, f64) {
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("simulator runtime");
    let sim = sim_rt.block_on(fixed_sim(20, itl_ms, |_| {}));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let report = client_rt.block_on(async {
        let hog = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::thread::sleep(Duration::from_millis(block_ms));
            }
        });
        let mut c = config(&sim.url(), 8, 32, 10);
        c.max_concurrency = NonZeroUsize::new(8);
        c.num_warmups = 8;
        let report = run(&c).await;
        hog.abort();
        report
    });
    assert_eq!(report.metrics.completed, 8, "{:?}", report.metrics.failures);
    let delays = event_delays(&report, &sim);
    let truth_tpot = truth_tpot_ms(&report, &sim);
    sim_rt.block_on(sim.stop());
    (report, delays, truth_tpot)
}

#[test]
fn a_busy_client_still_times_events_by_their_arrival() {
    // Events wait in the sockets while the client is blocked, yet each must be timed when it
    // arrived, not when the client got round to reading it. Blocks (25 ms) are shorter than the
    // 40 ms between a stream's events, so every read holds one event.
    let (report, delays, truth) = busy_client(40, 25);
    if cfg!(target_os = "linux") {
        assert_eq!(report.client.timestamps, Timestamps::Kernel);
        let waited = report
            .client
            .read_wait_max_ms
            .expect("kernel-stamped reads");
        assert!(
            waited > 15.0,
            "the hog never held a read back ({waited} ms)"
        );
        // Read at return, these events would trail by ~12 ms on average (the hog blocks 25 ms
        // of every 45); stamped at arrival, they trail by the loopback's delivery.
        assert_stamps_hold("busy client", &report, &delays);
        let alone: Vec<f64> = delays.iter().filter(|d| !d.shared).map(|d| d.ms).collect();
        let mean = alone.iter().sum::<f64>() / alone.len().max(1) as f64;
        assert!(
            mean < 2.0,
            "stamps trail the simulator's writes by {mean:.3} ms on average while reads waited \
             up to {waited:.1} ms"
        );
        let slack = if report.metrics.events_sharing_a_read == 0 {
            0.5
        } else {
            40.0 / 9.0 + 0.5
        };
        assert!(
            (report.metrics.tpot_ms.mean - truth).abs() < slack,
            "TPOT {} against the simulator's {truth}",
            report.metrics.tpot_ms.mean
        );
    }
}

#[test]
fn events_a_client_read_together_are_counted_and_flagged() {
    // Blocks of 60 ms against events 15 ms apart: a stream's events pile up and are read
    // together, sharing the newest one's time. The result must say so.
    let (report, _, _) = busy_client(15, 60);
    let shared = report.metrics.events_sharing_a_read;
    assert!(
        shared * 10 > report.metrics.output_events,
        "only {shared} of {} events shared a read",
        report.metrics.output_events
    );
    assert!(
        report
            .client
            .warnings
            .iter()
            .any(|w| w.contains("read together")),
        "{:?}",
        report.client.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_token_right_after_the_headers_is_not_held_back() {
    // With Nagle on either side, a first event 3 ms after the headers waits for a delayed ACK
    // (~40 ms) once a reused connection has left TCP's quick-ACK start. One connection, used
    // over and over: the measured TTFT must stay near the true 3 ms.
    let sim = fixed_sim(3, 1, |_| {}).await;
    let mut c = config(&sim.url(), 12, 32, 8);
    c.max_concurrency = NonZeroUsize::new(1);
    c.num_warmups = 4;
    let report = run(&c).await;
    assert_eq!(report.metrics.completed, 12);
    // A held-back first event arrives ~40 ms after the simulator handed it over, on every request
    // after the first few; a busy machine delays some, never most.
    let first_delays: Vec<f64> = first_event_delays(&report, &sim);
    let typical = median(first_delays.clone());
    assert!(
        typical < BOUND.as_secs_f64() * 1e3,
        "first events trail their hand-over by {typical:.1} ms in the median: {first_delays:?}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_token_events_keep_tpot_per_token() {
    let sim = fixed_sim(20, 5, |c| {
        c.faults.multi_token = 1.0;
        c.faults.tokens_per_event = 4;
    })
    .await;
    let report = run(&config(&sim.url(), 6, 32, 16)).await;
    let m = &report.metrics;
    assert_eq!(m.completed, 6);
    assert_eq!(m.total_output_tokens, 96, "usage counts tokens, not events");
    assert_eq!(m.output_events, 6 * 4);
    // Events arrive every 4 tokens (20 ms); TPOT still divides by tokens (~4 ms: 60 ms of gaps
    // over 15 tokens), as the simulator's own hand-over times give it.
    let truth = truth_tpot_ms(&report, &sim);
    assert!(
        (truth - 4.0).abs() < 1.0 && (m.tpot_ms.mean - truth).abs() < 0.5,
        "TPOT {} against the simulator's {truth}",
        m.tpot_ms.mean
    );
    // Per event: 15 token gaps over 3 event gaps.
    let truth_itl = truth * 15.0 / 3.0;
    assert!(
        (m.itl_ms.mean - truth_itl).abs() < 0.5,
        "ITL {} per event of 4 tokens against the simulator's {truth_itl}",
        m.itl_ms.mean
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_falls_back_to_the_tokenizer_and_says_so() {
    let sim = fixed_sim(5, 1, |c| c.faults.no_usage = 1.0).await;
    let report = run(&config(&sim.url(), 4, 32, 8)).await;
    assert_eq!(report.metrics.completed, 4);
    assert_eq!(report.metrics.usage_fallbacks, 4);
    // Tokenizing the joined text may merge or split words, so the fallback is close, not exact.
    let total = report.metrics.total_output_tokens;
    assert!(
        (28..=40).contains(&total),
        "fallback counted {total} tokens for 32 generated"
    );
    assert_eq!(report.metrics.prompt_check.reported, 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodput_counts_only_requests_meeting_every_slo() {
    let sim = fixed_sim(30, 2, |_| {}).await;
    let mut c = config(&sim.url(), 8, 32, 4);
    c.max_concurrency = NonZeroUsize::new(8);
    c.goodput.ttft_ms = Some(10.0);
    let strict = run(&c).await;
    assert_eq!(strict.metrics.good_completed, 0);
    c.goodput.ttft_ms = Some(5000.0);
    c.goodput.tpot_ms = Some(500.0);
    let loose = run(&c).await;
    assert_eq!(loose.metrics.good_completed, 8);
    assert!(loose.metrics.request_goodput > 0.0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_mode_spaces_requests_and_records_send_lag() {
    let sim = fixed_sim(1, 1, |_| {}).await;
    let mut c = config(&sim.url(), 20, 16, 2);
    c.request_rate = bench_core::RequestRate::PerSecond(50.0);
    let report = run(&c).await;
    assert_eq!(report.metrics.completed, 20);
    // 19 gaps of mean 20 ms: the run lasts a few hundred milliseconds, not a few.
    assert!(
        report.metrics.duration > Duration::from_millis(150),
        "{:?}",
        report.metrics.duration
    );
    let lag = report
        .metrics
        .send_lag_ms
        .as_ref()
        .expect("rate mode records lag");
    // Sends are on schedule to within the timer, unless the runtime itself woke late (a busy
    // machine), which the run measures and reports.
    let runtime_late = report.client.runtime_lag_max_ms;
    assert!(
        lag.max < 20.0 + runtime_late,
        "send lag up to {} ms while the runtime woke at most {runtime_late} ms late",
        lag.max
    );
    sim.stop().await;
}
