//! What the client measures against what the simulator did.
//!
//! Both share one process and one monotonic clock here. For each request the client's send
//! precedes the server's arrival and the server's hand-over of an event precedes its arrival at
//! the client, so: measured TTFT >= server (first hand-over - arrival), and the excess is the
//! loopback's and (where the kernel gives no arrival stamps) the client's delay, which must stay
//! under a small bound. Gaps between events are compared the same way.

use crate::support::{config, fixed_sim, run};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Overhead allowed per figure on a loaded 2-core machine running an unoptimised build.
const BOUND: Duration = Duration::from_millis(15);

/// Per event, (client read - simulator hand-over) in ms, matched by `x-request-id`.
fn read_delays(report: &bench_core::RunReport, sim: &bench_sim::SimHandle) -> Vec<f64> {
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| t.request_id.clone().map(|id| (id, t)))
        .collect();
    let mut delays = Vec::new();
    for r in &report.records {
        let t = &truth[&r.request_id];
        let sent: Vec<_> = t.output_sent().collect();
        assert_eq!(
            sent.len(),
            r.output_events.len(),
            "{}: every event the simulator sent was read",
            r.request_id
        );
        for (read, handed) in r.output_events.iter().zip(&sent) {
            assert!(
                read >= handed,
                "{}: read {:?} before the simulator handed it over",
                r.request_id,
                handed.saturating_duration_since(*read)
            );
            delays.push((*read - *handed).as_secs_f64() * 1e3);
        }
        // The client's TTFT can only exceed the server's own (arrival to first hand-over).
        let server_ttft = sent[0] - t.arrival;
        assert!(r.ttft().expect("completed") >= server_ttft);
    }
    delays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_timing_agrees_with_the_simulators_truth() {
    for (streams, read_mean_bound_ms) in [(16, 2.0), (256, 5.0)] {
        let sim = fixed_sim(50, 10, |_| {}).await;
        let mut c = config(&sim.url(), streams, 64, 20);
        c.max_concurrency = NonZeroUsize::new(streams);
        c.num_warmups = streams;
        let report = run(&c).await;
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
        // Kernel arrival stamps put the mean in microseconds even for an unoptimised client
        // sharing two cores with the simulator; read-time stamps (where the kernel gives none)
        // need the looser bounds.
        let kernel = report.client.timestamps == "kernel";
        let mean_bound_ms = if kernel { 0.5 } else { read_mean_bound_ms };
        let delays = read_delays(&report, &sim);
        assert_eq!(delays.len(), streams * 20);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let max = delays.iter().copied().fold(0.0, f64::max);
        eprintln!("{streams} streams: read delay mean {mean:.3} ms, max {max:.3} ms");
        assert!(
            mean < mean_bound_ms,
            "{streams} streams: mean read delay {mean} ms"
        );
        assert!(
            max < BOUND.as_secs_f64() * 1e3 * if kernel { 1.0 } else { 2.0 },
            "{streams} streams: max read delay {max} ms"
        );
        for r in &report.records {
            assert_eq!((r.output_tokens, r.output_events.len()), (20, 20));
        }
        // Gaps: the server spaces tokens 10 ms apart; TPOT follows.
        assert!(
            (report.metrics.tpot_ms.mean - 10.0).abs() < 0.5,
            "TPOT {}",
            report.metrics.tpot_ms.mean
        );
        sim.stop().await;
    }
}

/// Runs 8 streams of 10 tokens `itl_ms` apart from a simulator on its own runtime thread, against
/// a client on one thread that a hog blocks for `block_ms` out of every `block_ms + 20`. Returns
/// the report and each event's delay behind the simulator's write (ms).
fn busy_client(itl_ms: u64, block_ms: u64) -> (bench_core::RunReport, Vec<f64>) {
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
    let delays = read_delays(&report, &sim);
    sim_rt.block_on(sim.stop());
    (report, delays)
}

#[test]
fn a_busy_client_still_times_events_by_their_arrival() {
    // Events wait in the sockets while the client is blocked, yet each must be timed when it
    // arrived, not when the client got round to reading it. Blocks (25 ms) are shorter than the
    // 40 ms between a stream's events, so every read holds one event.
    let (report, delays) = busy_client(40, 25);
    if cfg!(target_os = "linux") {
        assert_eq!(report.client.timestamps, "kernel");
        let waited = report
            .client
            .read_wait_max_ms
            .expect("kernel-stamped reads");
        assert!(
            waited > 15.0,
            "the hog never held a read back ({waited} ms)"
        );
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let max = delays.iter().copied().fold(0.0, f64::max);
        assert!(
            mean < 1.0 && max < 5.0,
            "stamps trail the simulator's writes by {mean:.3} ms on average, {max:.3} ms at most, \
             while reads waited up to {waited:.1} ms"
        );
        assert!(
            (report.metrics.tpot_ms.mean - 40.0).abs() < 0.5,
            "TPOT {}",
            report.metrics.tpot_ms.mean
        );
    }
}

#[test]
fn events_a_client_read_together_are_counted_and_flagged() {
    // Blocks of 60 ms against events 15 ms apart: a stream's events pile up and are read
    // together, sharing the newest one's time. The result must say so.
    let (report, _) = busy_client(15, 60);
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
    let worst = report.metrics.ttft_ms.max;
    assert!(
        worst < 3.0 + BOUND.as_secs_f64() * 1e3,
        "TTFT up to {worst} ms for a 3 ms server"
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
    // Events arrive every 4 tokens (20 ms); TPOT still divides by tokens: ~5 ms.
    assert!(
        (m.tpot_ms.mean - 4.0 * 5.0 * 3.0 / 15.0).abs() < 1.5,
        "TPOT {}",
        m.tpot_ms.mean
    );
    assert!((m.itl_ms.mean - 20.0).abs() < 3.0, "ITL {}", m.itl_ms.mean);
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
    assert!(lag.max < 20.0, "send lag {}", lag.max);
    sim.stop().await;
}
