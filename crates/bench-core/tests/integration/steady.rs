//! The steady state leaves ramp-up and drain out. Requests arrive faster than a batching engine
//! serves them, under a limit of 16 in flight: the batch fills as they arrive (ramp-up), stays
//! full, and empties after the last send (drain). Every step costs about the same whatever its
//! batch, so output throughput is proportional to the requests in flight: the plateau's is the
//! full batch's, which the whole run's (ramp and drain included) understates.

use crate::support::{config, run, tokenizer_dir};
use bench_sim::timing::{EngineParams, Timing};
use bench_sim::{SimConfig, Simulator};
use std::num::NonZeroUsize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steady_state_is_the_full_batchs_with_ramp_and_drain_left_out() {
    let mut cfg = SimConfig::preset("sim-model", "small-tp1").expect("preset");
    // A step of 16 sequences takes 10 + 16 x 0.1 = 11.6 ms, of one 10.1 ms.
    cfg.timing = Timing::Batching(EngineParams {
        base_ms: 10.0,
        prefill_ms_per_token: 0.001,
        decode_ms_per_seq: 0.1,
        context_ms_per_token: 0.0,
        tp: 1,
        max_num_batched_tokens: 8192,
        max_num_seqs: 256,
        kv_cache_tokens: 1_000_000,
    });
    cfg.tokenizer = Some(tokenizer_dir());
    let sim = Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    // A request lives ~40 x 11.6 ms = 460 ms: 16 slots serve ~35 requests/s. 50/s arrive, so the
    // batch fills over ~300 ms, then requests queue for a slot; their ends stay as spread as
    // their arrivals, so the batch empties over as long again.
    let mut c = config(&sim.url(), 48, 32, 40);
    c.max_concurrency = NonZeroUsize::new(16);
    c.request_rate = bench_core::RequestRate::PerSecond(50.0);
    c.prompt.seed = 7;
    let report = run(&c).await;
    sim.stop().await;
    let m = &report.metrics;
    assert_eq!(m.completed, 48);
    let s = m
        .steady_state
        .as_ref()
        .expect("a run at its limit has a steady state");
    eprintln!(
        "window {:?}..{:?}, {} requests inside, held {:.3}; output tok/s steady {:.0}, whole {:.0}",
        s.start, s.end, s.requests, s.held_share, s.output_throughput, m.output_throughput
    );
    assert_eq!(s.level, 15);
    let t0 = report
        .records
        .iter()
        .map(|r| r.sent)
        .min()
        .expect("records");
    let mut sends: Vec<_> = report.records.iter().map(|r| r.sent - t0).collect();
    let mut ends: Vec<_> = report.records.iter().map(|r| r.ended - t0).collect();
    sends.sort();
    ends.sort();
    // It starts once 15 were sent, and ends after the last send, before the last end.
    assert!(s.start >= sends[14] && s.start < ends[0], "{:?}", s.start);
    assert!(s.end >= sends[47] && s.end < ends[47], "{:?}", s.end);
    assert!(
        s.trusted && s.requests >= 16 && s.requests < 48,
        "{} inside",
        s.requests
    );
    assert_eq!(s.latency.ttft.count, s.requests);
    // The plateau's batch is full, the whole run's half-empty at its ends.
    assert!(
        s.output_throughput > m.output_throughput * 1.1,
        "steady {} tok/s against the whole run's {}",
        s.output_throughput,
        m.output_throughput
    );
}
