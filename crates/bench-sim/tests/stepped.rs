//! The stepped clock: a closed loop's modelled timeline is the model's, whatever the machine and
//! the client take in wall time, and follows the rules of real time (a request sent when a token
//! arrives joins the step after next; an idle engine starts at the request's arrival).

use bench_sim::stepped::Phase;
use bench_sim::truth::RequestTruth;
use bench_sim::{SimConfig, SimHandle, Simulator};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenizers/deepseek-v4")
}

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::preset("m", "small-tp1").expect("preset");
    cfg.tokenizer = Some(tokenizer());
    cfg.stepped_clock = true;
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("starts")
}

/// Request `k`'s body: prompts of different lengths, so that batches differ from step to step.
fn body(k: usize, max_tokens: u32) -> String {
    let prompt = "word ".repeat(200 + 700 * (k % 4));
    format!(
        r#"{{"model":"m","prompt":"{prompt}","max_tokens":{max_tokens},"stream":true,"ignore_eos":true}}"#
    )
}

/// A pseudo-random delay of up to 12 ms for `(k, step)`, or none: a busy machine's client.
fn jitter(on: bool, k: usize, step: usize) -> Duration {
    if !on {
        return Duration::ZERO;
    }
    let h = (k as u64 * 7919 + step as u64 * 104_729) % 13;
    Duration::from_millis(h)
}

/// What the client saw of one request, in modelled time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    sent: Instant,
    events: Vec<Instant>,
}

/// A test client that tells the stepped clock what it read.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    bodies: Arc<Vec<String>>,
    clock: Arc<bench_sim::stepped::SteppedClock>,
    delays: bool,
}

impl Client {
    /// Sends request `k` and reads its stream: when it was sent, when each output event came.
    async fn send(&self, k: usize) -> (usize, Instant, Vec<Instant>) {
        let sent = Instant::now();
        let mut resp = self
            .http
            .post(&self.url)
            .body(self.bodies[k].clone())
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
        let mut events = Vec::new();
        let mut step = 0;
        while let Some(chunk) = resp.chunk().await.expect("read") {
            let at = Instant::now();
            tokio::time::sleep(jitter(self.delays, k, step)).await;
            step += 1;
            let text = String::from_utf8_lossy(&chunk);
            for _ in text.matches("\"text\"") {
                events.push(at);
                self.clock.event_read();
            }
        }
        (k, sent, events)
    }
}

/// Runs `bodies` as a closed loop of `concurrency` streams (after `warmups` of them, sent at
/// once), reporting each output event to the stepped clock, with or without delays before each
/// read and each send. Returns each request's send and event stamps, mapped to modelled time.
async fn closed_loop(
    handle: &SimHandle,
    bodies: &[String],
    warmups: usize,
    concurrency: usize,
    delays: bool,
) -> Vec<Seen> {
    assert_eq!(handle.pretokenize(bodies).await.known, bodies.len());
    handle.closed_loop(&[
        Phase {
            requests: warmups as u64,
            concurrency: warmups as u64,
        },
        Phase {
            requests: (bodies.len() - warmups) as u64,
            concurrency: concurrency as u64,
        },
    ]);
    let clock = Arc::clone(handle.stepped().expect("a stepped clock"));
    let client = Client {
        http: reqwest::Client::new(),
        url: format!("{}/v1/completions", handle.url()),
        bodies: Arc::new(bodies.to_vec()),
        clock: Arc::clone(&clock),
        delays,
    };
    let mut seen = vec![None; bodies.len()];
    // Warm-up: all at once, then the measured phase once they all ended.
    let warm: Vec<_> = (0..warmups)
        .map(|k| {
            let client = client.clone();
            tokio::spawn(async move { client.send(k).await })
        })
        .collect();
    for t in warm {
        let (k, sent, events) = t.await.expect("warm-up");
        seen[k] = Some((sent, events));
    }
    let next = Arc::new(AtomicUsize::new(warmups));
    let streams: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, client) = (Arc::clone(&next), client.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= client.bodies.len() {
                        return out;
                    }
                    tokio::time::sleep(jitter(client.delays, k, 99)).await;
                    out.push(client.send(k).await);
                }
            })
        })
        .collect();
    for s in streams {
        for (k, sent, events) in s.await.expect("stream") {
            seen[k] = Some((sent, events));
        }
    }
    assert_eq!(
        clock.timeouts(),
        0,
        "no window had to go on without the client"
    );
    seen.into_iter()
        .map(|s| {
            let (sent, events) = s.expect("every request ran");
            Seen {
                sent: clock.modelled(sent),
                events: events.into_iter().map(|e| clock.modelled(e)).collect(),
            }
        })
        .collect()
}

/// Each request's TTFT and gaps between events, ns.
fn shape(seen: &[Seen]) -> Vec<Vec<u128>> {
    seen.iter()
        .map(|s| {
            let mut v = vec![(s.events[0] - s.sent).as_nanos()];
            v.extend(s.events.windows(2).map(|w| (w[1] - w[0]).as_nanos()));
            v
        })
        .collect()
}

fn truth_by_order(handle: &SimHandle) -> Vec<RequestTruth> {
    let mut truth = handle.truth();
    truth.sort_by_key(|t| t.arrival);
    truth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_gets_the_same_modelled_timeline_however_slow_its_client() {
    let bodies: Vec<String> = (0..15)
        .map(|k| body(k, if k < 3 { 1 } else { 6 }))
        .collect();
    let quick = sim().await;
    let fast = closed_loop(&quick, &bodies, 3, 3, false).await;
    let slow_sim = sim().await;
    let slow = closed_loop(&slow_sim, &bodies, 3, 3, true).await;
    assert_eq!(
        shape(&fast),
        shape(&slow),
        "the same timeline, to the nanosecond"
    );
    for handle in [&quick, &slow_sim] {
        for t in handle.truth() {
            // Every event was handed over in its step's window: at its token's modelled time.
            let sent: Vec<Instant> = t.output_sent().collect();
            assert_eq!(sent, t.token_due, "request {:?}", t.request_id);
        }
    }
    quick.stop().await;
    slow_sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_join_steps_as_they_would_in_real_time() {
    // One stream: each request finds the engine idle and starts the nanosecond it arrives,
    // just after the one before it ended.
    let bodies: Vec<String> = (0..5).map(|k| body(k, 3)).collect();
    let handle = sim().await;
    let seen = closed_loop(&handle, &bodies, 1, 1, true).await;
    let truth = truth_by_order(&handle);
    assert_eq!(truth.len(), 5);
    for pair in truth.windows(2) {
        let last = *pair[0].token_due.last().expect("tokens");
        let start = pair[1].prefill_start.expect("prefilled");
        assert!(start > last && start - last < Duration::from_micros(1));
    }
    // The client sent each one in the window of its predecessor's last token.
    for (pair, t) in seen.windows(2).zip(truth.windows(2)) {
        assert_eq!(pair[1].sent, *t[0].token_due.last().expect("tokens"));
    }
    handle.stop().await;

    // Three streams: a request sent when another's last token came joins the step after the
    // next one, as in real time, where it arrives after the next step began.
    let bodies: Vec<String> = (0..12).map(|k| body(k, 4)).collect();
    let handle = sim().await;
    closed_loop(&handle, &bodies, 3, 3, false).await;
    let truth = truth_by_order(&handle);
    // Every step boundary the requests saw: prefill starts and tokens' due times.
    let boundaries: std::collections::BTreeSet<Instant> = truth
        .iter()
        .flat_map(|t| t.token_due.iter().copied().chain(t.prefill_start))
        .collect();
    for t in &truth[6..] {
        // Sent when another request ended, it arrived in that step's window; the step that
        // began then had already begun, so it starts with the one after.
        let start = t.prefill_start.expect("prefilled");
        let next = boundaries
            .range((
                std::ops::Bound::Excluded(t.arrival),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .copied();
        assert!(
            boundaries.contains(&t.arrival),
            "it arrived as a step ended"
        );
        assert_eq!(Some(start), next, "request {:?}", t.request_id);
    }
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_ended_early_owes_nothing_more() {
    // Four requests, two at a time, but the client stops after the first two: once it says so,
    // the one still streaming runs to its end without a window waiting for a third.
    let handle = sim().await;
    let bodies = vec![body(0, 2), body(1, 8), body(2, 2), body(3, 2)];
    assert_eq!(handle.pretokenize(&bodies).await.known, 4);
    handle.closed_loop(&[Phase {
        requests: 4,
        concurrency: 2,
    }]);
    let clock = Arc::clone(handle.stepped().expect("a stepped clock"));
    let client = Client {
        http: reqwest::Client::new(),
        url: format!("{}/v1/completions", handle.url()),
        bodies: Arc::new(bodies),
        clock: Arc::clone(&clock),
        delays: false,
    };
    let long = {
        let client = client.clone();
        tokio::spawn(async move { client.send(1).await })
    };
    let (_, _, first) = client.send(0).await;
    assert_eq!(first.len(), 2);
    clock.end_loop();
    let (_, _, second) = long.await.expect("the long request");
    assert_eq!(second.len(), 8);
    assert_eq!(
        clock.timeouts(),
        0,
        "no window waited for the requests never sent"
    );
    handle.stop().await;
}
