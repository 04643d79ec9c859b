//! A run against the simulator's stepped clock: the client reports its reads and maps its stamps
//! (`bench_core::ServerClock`), and measures the model exactly; a client that does not report
//! its reads leaves the simulator waiting, and the result says so.

use crate::support::{config, tokenizer, tokenizer_dir};
use bench_core::client::ReadObserver;
use bench_core::progress::ProgressMode;
use bench_core::{Gates, ServerClock};
use bench_sim::{SimConfig, SimHandle, Simulator};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

async fn stepped_sim() -> SimHandle {
    let mut cfg = SimConfig::preset("sim-model", "small-tp1").expect("preset");
    cfg.tokenizer = Some(tokenizer_dir());
    cfg.stepped_clock = true;
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// Runs `c` against `sim`, with the stepped clock's reporting and mapping when `report_reads`.
async fn run(sim: &SimHandle, c: &bench_core::RunConfig, report_reads: bool) -> serde_json::Value {
    let prepared = bench_core::prepare(c, tokenizer())
        .await
        .expect("prompts build");
    let mut gates = Gates::default();
    if report_reads {
        let clock = Arc::clone(sim.stepped().expect("a stepped clock"));
        let reads = Arc::clone(&clock);
        gates.server_clock = Some(ServerClock {
            reads: ReadObserver(Arc::new(move || reads.event_read())),
            map: Arc::new(move |t| clock.modelled(t)),
        });
    }
    let report = bench_core::execute_gated(
        c,
        &prepared,
        &CancellationToken::new(),
        ProgressMode::Off,
        gates,
    )
    .await
    .expect("run executes");
    bench_core::result::to_json(&report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reports_its_reads_measures_the_model_exactly() {
    let sim = stepped_sim().await;
    let mut c = config(&sim.url(), 6, 300, 5);
    c.num_warmups = 0;
    c.max_concurrency = std::num::NonZeroUsize::new(1);
    let v = run(&sim, &c, true).await;
    assert_eq!(v["sim_clock"], "stepped");
    assert_eq!(v["sim_time_scale"], 1.0);
    assert_eq!(v["sim_stepped_timeouts"], 0.0);
    assert_eq!(v["sim_kept_schedule"], true);
    // One stream: each request finds the engine idle, so its TTFT is its prompt's prefill and
    // each later token one decode step, exactly, in the preset's modelled time.
    let timing = bench_sim::timing::preset("small-tp1").expect("preset");
    let bench_sim::timing::Timing::Batching(params) = &timing else {
        panic!("a batching preset");
    };
    let lone = timing.lone_ttft(300).as_secs_f64() * 1e3;
    let ttft = v["mean_ttft_ms"].as_f64().expect("TTFT");
    assert!((ttft - lone).abs() < 1e-3, "{ttft} ms against {lone} ms");
    let step = params.step_time(0, 1, 301).as_secs_f64() * 1e3;
    let tpot = v["mean_tpot_ms"].as_f64().expect("TPOT");
    // The context grows by a token a step: 0.00002 ms a token in this preset.
    assert!((tpot - step).abs() < 1e-3, "{tpot} ms against {step} ms");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_report_its_reads_is_flagged() {
    let sim = stepped_sim().await;
    let mut c = config(&sim.url(), 1, 64, 2);
    c.num_warmups = 0;
    let v = run(&sim, &c, false).await;
    assert_eq!(v["completed"], 1, "the run still completes");
    let timeouts = v["sim_stepped_timeouts"]
        .as_f64()
        .expect("timeouts recorded");
    assert!(timeouts >= 1.0, "{timeouts}");
    assert_eq!(v["sim_kept_schedule"], false);
    let warnings = v["server"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("stepped clock went on"))),
        "{warnings:?}"
    );
    sim.stop().await;
}
