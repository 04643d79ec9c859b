//! The fault matrix: against the simulator's injected faults, alone and mixed, at rates from 1%
//! to 50%, every fault the simulator's truth log says it injected is a failure with the right
//! reason, nothing else fails, completed requests keep the simulator's timing, the run ends and
//! its file reads back.

use crate::support::{config, fixed_sim, run, TRANSPORTS};
use bench_core::config::TransportKind;
use bench_sim::SimConfig;
use std::collections::BTreeMap;
use std::time::Duration;

/// The client's reason for each fault the simulator injects.
const REASONS: [(&str, &str); 5] = [
    ("http_500", "http_500"),
    ("error_event", "server_error_event"),
    ("cut", "stream_cut"),
    ("malformed", "malformed_event"),
    // A stall longer than the idle timeout ends by it.
    ("stall", "idle_timeout"),
];

fn set(c: &mut SimConfig, fault: &str, rate: f64) {
    let f = &mut c.faults;
    match fault {
        "http_500" => f.http_500 = rate,
        "error_event" => f.error_event = rate,
        "cut" => f.cut = rate,
        "malformed" => f.malformed = rate,
        "stall" => f.stall = rate,
        other => panic!("no fault {other}"),
    }
}

/// One run of 48 requests through each transport against a simulator with `faults` at `rate`
/// (plus requests without usage and with several tokens per event, which are not failures);
/// checks each against the simulator's truth.
async fn check(faults: &[&str], rate: f64, seed: u64) {
    for transport in TRANSPORTS {
        check_one(faults, rate, seed, transport).await;
    }
}

async fn check_one(faults: &[&str], rate: f64, seed: u64, transport: TransportKind) {
    let sim = fixed_sim(2, 2, |c| {
        c.seed = seed;
        for f in faults {
            set(c, f, rate);
        }
        c.faults.stall_for = Duration::from_secs(2);
        c.faults.no_usage = rate;
        c.faults.multi_token = rate;
        c.faults.tokens_per_event = 3;
    })
    .await;
    let mut c = config(&sim.url(), 48, 32, 12);
    c.max_concurrency = std::num::NonZeroUsize::new(8);
    c.idle_timeout = Some(Duration::from_millis(400));
    c.transport = transport;
    let report = tokio::time::timeout(Duration::from_secs(120), run(&c))
        .await
        .expect("the run ends");
    let label = format!("{transport:?} transport, {faults:?} at {rate}");
    let measured = |t: &bench_sim::truth::RequestTruth| {
        t.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("inferperf-m"))
    };
    // The simulator files a request when its stream ends. A stalled stream the client gave up on
    // ends when the simulator sees the connection gone, which may be only when the stall is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.truth().iter().filter(|t| measured(t)).count() < 48 {
        assert!(
            std::time::Instant::now() < deadline,
            "{label}: the simulator filed every request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut injected: BTreeMap<&str, u64> = BTreeMap::new();
    for t in sim.truth() {
        if measured(&t) {
            if let Some(f) = t.fault {
                let reason = REASONS.iter().find(|(k, _)| *k == f).map(|(_, r)| *r);
                *injected.entry(reason.expect("a known fault")).or_default() += 1;
            }
        }
    }
    let failed: BTreeMap<&str, u64> = report
        .metrics
        .failures
        .iter()
        .map(|(k, g)| (k.as_str(), g.count))
        .collect();
    assert_eq!(
        failed, injected,
        "{label}: failures by reason against the truth"
    );
    let total: u64 = injected.values().sum();
    assert_eq!(report.metrics.completed as u64, 48 - total, "{label}");
    // Completed requests keep the simulator's timing: 2 ms per token, whatever else happened.
    if report.metrics.completed > 0 {
        let tpot = report.metrics.tpot_ms.median;
        assert!((tpot - 2.0).abs() < 1.0, "{label}: median TPOT {tpot}");
    }
    let value = bench_core::result::to_json(&report);
    let back = bench_result::parse(value.to_string().as_bytes(), std::path::Path::new("r.json"))
        .expect("the file reads back");
    assert_eq!(back.completed, Some(report.metrics.completed as u64));
    assert_eq!(back.failures.map(|f| f.len()), Some(failed.len()));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_alone_is_counted_with_its_reason() {
    for (i, (fault, _)) in REASONS.iter().enumerate() {
        check(&[fault], 0.25, i as u64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_faults_at_1_10_and_50_percent() {
    let all: Vec<&str> = REASONS.iter().map(|(f, _)| *f).collect();
    for (rate, seed) in [(0.01, 11), (0.1, 12), (0.5, 13)] {
        check(&all, rate, seed).await;
    }
}

/// A slow start and a restart: requests the simulator refused while it was not ready are
/// `http_503`, streams its restart cut are `stream_cut`, exactly as many as its truth says.
///
/// Streams last ~780 ms, so every stream accepted before the restart (900 ms after the start,
/// the slow start ending at 200 ms) is still open when it strikes. A machine that keeps the
/// client from sending anything in between leaves the restart nothing to cut: the truth shows
/// it (no stream open across a refusal of the downtime), and that run, and only that one, is
/// run once more, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_and_a_restart_are_counted_against_the_truth() {
    for attempt in 1..=2 {
        match slow_start_and_restart().await {
            Restart::Cut => return,
            Restart::NothingOpen(why) if attempt == 1 => {
                eprintln!("the restart found no stream open ({why}): running once more");
            }
            Restart::NothingOpen(why) => panic!("twice the restart found no stream open: {why}"),
        }
    }
}

/// What a run of [`slow_start_and_restart`] gave the restart to cut.
enum Restart {
    Cut,
    /// No stream was open when it struck, and why the truth says so.
    NothingOpen(String),
}

async fn slow_start_and_restart() -> Restart {
    // Prompts are built first, so the run starts within the simulator's slow start.
    let mut c = config("http://127.0.0.1:9", 60, 16, 40);
    c.max_concurrency = std::num::NonZeroUsize::new(4);
    c.request_rate = bench_core::RequestRate::PerSecond(40.0);
    let prepared = bench_core::prepare(&c, crate::support::tokenizer())
        .await
        .expect("prompts");
    let sim = fixed_sim(2, 20, |c| {
        c.slow_start = Duration::from_millis(200);
        c.restart_after = Some(Duration::from_millis(900));
        c.restart_downtime = Duration::from_millis(300);
    })
    .await;
    c.base_url = sim.url().parse().expect("the simulator's URL");
    let stop = tokio_util::sync::CancellationToken::new();
    let off = bench_core::progress::ProgressMode::Off;
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        bench_core::execute(&c, &prepared, &stop, off),
    )
    .await
    .expect("the run ends")
    .expect("the run executes");
    let truth = sim.truth();
    sim.stop().await;
    let refused = truth
        .iter()
        .filter(|t| t.outcome == bench_sim::truth::TruthOutcome::Refused(503))
        .count() as u64;
    let restarted = truth
        .iter()
        .filter(|t| t.outcome == bench_sim::truth::TruthOutcome::Restarted)
        .count() as u64;
    let count = |k: &str| report.metrics.failures.get(k).map_or(0, |g| g.count);
    assert_eq!(count("http_503"), refused);
    assert_eq!(count("stream_cut"), restarted);
    assert_eq!(
        report.metrics.completed as u64 + refused + restarted,
        60,
        "{:?}",
        report.metrics.failures
    );
    assert!(
        refused > 0,
        "the slow start and the downtime refused nothing"
    );
    if restarted > 0 {
        return Restart::Cut;
    }
    // Refusals after the first stream the simulator accepted are the downtime's: a stream still
    // sending across one of them was open at the restart, and cutting it is the code's job.
    let first_accepted = truth
        .iter()
        .filter(|t| t.outcome == bench_sim::truth::TruthOutcome::Completed)
        .map(|t| t.arrival)
        .min();
    let downtime: Vec<_> = truth
        .iter()
        .filter(|t| t.outcome == bench_sim::truth::TruthOutcome::Refused(503))
        .map(|t| t.arrival)
        .filter(|at| first_accepted.is_some_and(|first| *at > first))
        .collect();
    let open_across = truth.iter().any(|t| {
        let last = t.events.last().map(|e| e.at);
        downtime
            .iter()
            .any(|d| t.arrival < *d && last.is_some_and(|l| l > *d))
    });
    assert!(
        !open_across,
        "a stream was open while the simulator was down, and the restart did not cut it"
    );
    Restart::NothingOpen(format!(
        "{} requests refused in the downtime, {} completed, none sending across a refusal",
        downtime.len(),
        report.metrics.completed
    ))
}
