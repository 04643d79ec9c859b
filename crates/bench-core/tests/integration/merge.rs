//! Two clients measuring one run at once, merged: every figure is the union of their records',
//! and the merged records are the simulator's, request by request.

use crate::support::{config, fixed_sim, run};
use bench_core::merge::{merge, ClientPart};
use bench_core::stats::Distribution;
use std::collections::HashMap;
use std::time::Instant;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A part written and read back, as between two machines.
fn through_json(part: ClientPart) -> ClientPart {
    serde_json::from_str(&serde_json::to_string(&part).expect("serializes")).expect("reads back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_merge_into_the_figures_of_their_union() {
    let sim = fixed_sim(40, 5, |c| c.faults.http_500 = 0.2).await;
    let client = |k: u32| {
        let mut c = config(&sim.url(), 12, 64, 16);
        c.max_concurrency = std::num::NonZeroUsize::new(3);
        c.prompt.seed = 7 + u64::from(k);
        c.client = Some(k);
        c
    };
    let (a, b) = (client(0), client(1));
    let (ra, rb) = tokio::join!(run(&a), run(&b));
    let parts = [
        through_json(ClientPart::of(&ra, 0)),
        through_json(ClientPart::of(&rb, 1)),
    ];
    let mut whole = config(&sim.url(), 24, 64, 16);
    whole.max_concurrency = std::num::NonZeroUsize::new(6);
    let merged = merge(&whole, &parts).expect("merges");
    let m = &merged.metrics;

    // Counts and failures are the sums.
    assert_eq!(merged.records.len(), 24);
    assert_eq!(m.completed, ra.metrics.completed + rb.metrics.completed);
    assert_eq!(
        m.total_output_tokens,
        ra.metrics.total_output_tokens + rb.metrics.total_output_tokens
    );
    let failed =
        |r: &bench_core::RunReport| r.metrics.failures.get("http_500").map_or(0, |g| g.count);
    assert_eq!(
        m.failures.get("http_500").map_or(0, |g| g.count),
        failed(&ra) + failed(&rb)
    );
    assert!(
        m.completed > 0 && failed(&ra) + failed(&rb) > 0,
        "both outcomes seen"
    );

    // Percentiles over the union of the records, not averages of the clients' percentiles.
    let ttfts: Vec<f64> = ra
        .records
        .iter()
        .chain(&rb.records)
        .filter(|r| r.is_success())
        .filter_map(|r| r.ttft().map(ms))
        .collect();
    let union = Distribution::from_samples(&ttfts, &[50.0, 99.0]);
    assert!(
        (m.ttft_ms.median - union.median).abs() < 1e-6,
        "{} vs {}",
        m.ttft_ms.median,
        union.median
    );
    assert!(
        (m.ttft_ms.percentile(99.0).unwrap_or(0.0) - union.percentile(99.0).unwrap_or(1.0)).abs()
            < 1e-6
    );

    // Throughput over the merged window: the earliest first send to the latest end. Both clients
    // ran here, so their clocks agree to the pairing of a wall-clock with a monotonic reading
    // (microseconds; a few milliseconds if the scheduler paused the client in every try).
    let start = ra
        .records
        .iter()
        .chain(&rb.records)
        .map(|r| r.sent)
        .min()
        .expect("sent");
    let end = ra
        .records
        .iter()
        .chain(&rb.records)
        .map(|r| r.ended)
        .max()
        .expect("ended");
    let window = ms(end - start);
    assert!(
        (ms(m.duration) - window).abs() < 10.0,
        "merged {} ms, union {window} ms",
        ms(m.duration)
    );
    is_a_result_file(&merged);
    let clients = merged.clients.as_ref().expect("the clients section");
    assert_eq!(clients.count, 2);
    assert!(clients.start_skew_ms < 100.0, "{}", clients.start_skew_ms);

    each_request_is_the_simulators(&merged, &sim);
    sim.stop().await;
}

/// Request by request, the simulator's truth: every event it handed over was read, after it was
/// handed over, and every request id is its client's own.
fn each_request_is_the_simulators(merged: &bench_core::RunReport, sim: &bench_sim::SimHandle) {
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| t.request_id.clone().map(|id| (id, t)))
        .collect();
    let mut ids: Vec<&str> = merged
        .records
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24, "every request id is its client's own");
    for r in merged.records.iter().filter(|r| r.is_success()) {
        let t = &truth[&r.request_id];
        let handed: Vec<Instant> = t.output_sent().collect();
        assert_eq!(handed.len(), r.output_events.len(), "{}", r.request_id);
        let server_ttft = handed[0] - t.arrival;
        assert!(r.ttft().expect("completed") + bench_core::CONVERSION_ERROR >= server_ttft);
    }
}

/// The merged file is a result file like any other, with its clients section.
fn is_a_result_file(merged: &bench_core::RunReport) {
    let value = bench_core::result::to_json(merged);
    let validator = jsonschema::validator_for(&crate::schema::schema()).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(value["clients"]["each"][1]["client"], 1);
}
