//! Streams that complete but break the protocol's promises are counted by kind, each against the
//! simulator's record of the liberties it took, through both transports.

use crate::support::{config, fixed_sim, run, TRANSPORTS};
use bench_core::metrics::Violation;
use std::collections::BTreeMap;

/// The result's kind for each liberty the simulator records.
const KINDS: [(&str, &str); 5] = [
    ("no_finish_reason", "finish_reason_missing"),
    ("no_usage", "usage_missing"),
    ("prompt_miscount", "prompt_tokens_mismatch"),
    ("shortened", "output_tokens_mismatch"),
    ("event_after_done", "events_after_done"),
];

async fn counted_against_the_truth(
    tweak: impl Fn(&mut bench_sim::SimConfig) + Copy,
    occurring: &[&str],
) {
    for transport in TRANSPORTS {
        let sim = fixed_sim(2, 1, tweak).await;
        let mut c = config(&sim.url(), 40, 32, 12);
        c.ignore_eos = true;
        c.transport = transport;
        c.max_concurrency = std::num::NonZeroUsize::new(8);
        let report = run(&c).await;
        let m = &report.metrics;
        assert_eq!(m.completed, 40, "{transport:?}: liberties fail nothing");
        // What the simulator did, per kind: the requests it took each liberty with.
        let mut taken: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in sim.truth() {
            for liberty in &t.liberties {
                let kind = KINDS.iter().find(|(l, _)| l == liberty).map(|(_, k)| *k);
                taken
                    .entry(kind.expect("a known liberty"))
                    .or_default()
                    .push(t.request_id.clone().unwrap_or_default());
            }
        }
        // A prompt miscount shows only where usage came.
        let no_usage = taken.get("usage_missing").cloned().unwrap_or_default();
        if let Some(miscounted) = taken.get_mut("prompt_tokens_mismatch") {
            miscounted.retain(|id| !no_usage.contains(id));
        }
        for (_, kind) in KINDS {
            let expected = taken.get(kind).map_or(0, Vec::len) as u64;
            assert_eq!(
                expected > 0,
                occurring.contains(&kind),
                "{transport:?}: {kind}: the simulator took it {expected} times"
            );
            let v: &Violation = &m.integrity[kind];
            assert_eq!(v.count, expected, "{transport:?}: {kind}");
            match &v.example_request_id {
                Some(id) => assert!(taken[kind].contains(id), "{transport:?}: {kind}: {id}"),
                None => assert_eq!(expected, 0, "{transport:?}: {kind} has no example"),
            }
        }
        // The summary flags each kind that occurred, naming an example.
        let table = bench_core::console::table(&report);
        let warnings = bench_core::console::warnings(&report).join("\n");
        for (kind, v) in m.integrity.iter().filter(|(_, v)| v.count > 0) {
            assert!(
                table.contains(kind),
                "{transport:?}: {kind} not in\n{table}"
            );
            let id = v.example_request_id.as_deref().unwrap_or("?");
            assert!(
                warnings.contains(id),
                "{transport:?}: {id} not in\n{warnings}"
            );
        }
        sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_promise_is_counted_with_an_example() {
    counted_against_the_truth(
        |c| {
            let l = &mut c.faults.liberties;
            l.no_finish_reason = 0.2;
            l.shorten = 0.2;
            l.event_after_done = 0.2;
            l.prompt_miscount = 0.2;
        },
        &[
            "finish_reason_missing",
            "prompt_tokens_mismatch",
            "output_tokens_mismatch",
            "events_after_done",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_counted_apart_from_the_rest() {
    // Without usage the output is counted by the tokenizer, which need not give the target (the
    // simulator's words re-tokenize to other counts): that is no evidence of a shortened output,
    // so only usage_missing counts them.
    counted_against_the_truth(|c| c.faults.no_usage = 0.3, &["usage_missing"]).await;
}
