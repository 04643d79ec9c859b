//! Events that carry several tokens: per-token gaps beside per-event ITL, from per-event usage
//! when the server sends it (vLLM's continuous_usage_stats) and from the tokenizer otherwise,
//! against the simulator's record of how many tokens each event carried.

use crate::support::{config, fixed_sim, run, TRANSPORTS};
use bench_core::record::EventTokens;

/// Every request's events carry three tokens, two milliseconds each.
async fn three_tokens_an_event(
    continuous_usage_stats: bool,
    transport: bench_core::config::TransportKind,
) -> (bench_core::RunReport, Vec<Vec<u32>>) {
    let sim = fixed_sim(5, 2, |c| {
        c.faults.multi_token = 1.0;
        c.faults.tokens_per_event = 3;
    })
    .await;
    let mut c = config(&sim.url(), 8, 32, 12);
    c.ignore_eos = true;
    c.continuous_usage_stats = continuous_usage_stats;
    c.transport = transport;
    c.max_concurrency = std::num::NonZeroUsize::new(4);
    let report = run(&c).await;
    // The tokens of each request's output events, in the order the records are.
    let truth = sim.truth();
    let sent: Vec<Vec<u32>> = report
        .records
        .iter()
        .map(|r| {
            let t = truth
                .iter()
                .find(|t| t.request_id.as_deref() == Some(r.request_id.as_str()))
                .expect("the simulator saw it");
            t.events
                .iter()
                .map(|e| e.tokens)
                .filter(|n| *n > 0)
                .collect()
        })
        .collect();
    sim.stop().await;
    (report, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_event_usage_gives_each_events_tokens_exactly() {
    for transport in TRANSPORTS {
        let (report, sent) = three_tokens_an_event(true, transport).await;
        let m = &report.metrics;
        assert_eq!(m.completed, 8);
        for (r, truth) in report.records.iter().zip(&sent) {
            assert_eq!(
                r.event_tokens,
                EventTokens::Reported(truth.clone()),
                "{}",
                r.request_id
            );
        }
        assert_eq!((m.multi_token_events, m.events_with_token_counts), (32, 32));
        // Each event's gap is spread over its three tokens (to the nanosecond).
        let per_token = m.itl_per_token_ms.as_ref().expect("known counts");
        assert_eq!(
            per_token.count,
            8 * 9,
            "three tokens for each of three gaps a request"
        );
        assert!(
            (per_token.median * 3.0 - m.itl_ms.median).abs() < 1e-5,
            "per token {} against per event {}",
            per_token.median,
            m.itl_ms.median
        );
        // The table shows both, and the share of multi-token events.
        let table = bench_core::console::table(&report);
        assert!(
            table.contains("Per-token gap (100.0% of events multi-token)"),
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_per_event_usage_the_tokenizer_counts_each_events_text() {
    let (report, sent) = three_tokens_an_event(false, TRANSPORTS[0]).await;
    let m = &report.metrics;
    assert_eq!(m.completed, 8);
    let (mut counted, mut exact) = (0, 0);
    for (r, truth) in report.records.iter().zip(&sent) {
        let EventTokens::Tokenized(counts) = &r.event_tokens else {
            panic!("{}: {:?}", r.request_id, r.event_tokens);
        };
        assert_eq!(counts.len(), truth.len());
        counted += counts.len();
        exact += counts.iter().zip(truth).filter(|(a, b)| a == b).count();
    }
    // An estimate: a word's tokens on its own may differ from the model's, but most agree.
    assert!(
        exact * 10 >= counted * 7,
        "{exact} of {counted} events counted as sent"
    );
    assert_eq!(m.events_with_token_counts, 32);
    assert!(m.multi_token_events >= 24, "{}", m.multi_token_events);
    assert!(m.itl_per_token_ms.is_some());
}
