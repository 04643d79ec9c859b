//! Announced requests are scheduled in the order they were announced, whatever order the machine
//! delivers them in: the demo's schedule must not depend on which of two requests sent together
//! reached the server first.

use bench_sim::{SimConfig, SimHandle, Simulator};
use std::path::PathBuf;
use std::time::Duration;

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenizers/deepseek-v4")
}

async fn sim() -> SimHandle {
    let mut cfg = SimConfig::preset("m", "small-tp1").expect("preset");
    cfg.tokenizer = Some(tokenizer());
    cfg.time_scale = 1.0;
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("starts")
}

/// A prompt longer than one step's budget (8,192 tokens), so each takes steps of its own.
fn body(words: usize) -> String {
    let prompt = "word ".repeat(words);
    format!(r#"{{"model":"m","prompt":"{prompt}","max_tokens":2,"stream":true,"ignore_eos":true}}"#)
}

/// Sends `bodies[k]` after `delays_ms[k]`, with request id `r<k>`, and reads every reply to its end.
async fn send(url: &str, bodies: &[String], delays_ms: &[u64]) {
    let http = reqwest::Client::new();
    let tasks: Vec<_> = bodies
        .iter()
        .zip(delays_ms)
        .enumerate()
        .map(|(k, (body, &delay))| {
            let (http, url, body) = (http.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let resp = http
                    .post(format!("{url}/v1/completions"))
                    .header("x-request-id", format!("r{k}"))
                    .body(body)
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(resp.status(), 200);
                resp.bytes().await.expect("read");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_requests_are_scheduled_in_the_announced_order_whatever_order_they_come_in() {
    // Delivered last first, 10 ms apart: the test is about what the simulator does with that.
    // A busy machine may deliver them otherwise, or the first announced more than the wait for
    // it after the others; such a run proves nothing, says so, and is run once more.
    for attempt in 1..=2 {
        let handle = sim().await;
        let bodies: Vec<String> = [9_000, 10_000, 9_500].into_iter().map(body).collect();
        assert_eq!(handle.pretokenize(&bodies).await.known, 3);
        send(&handle.url(), &bodies, &[20, 10, 0]).await;
        let truth = handle.truth();
        let find = |id: &str| {
            truth
                .iter()
                .find(|t| t.request_id.as_deref() == Some(id))
                .unwrap_or_else(|| panic!("{id} in the truth"))
                .clone()
        };
        let (r0, r1, r2) = (find("r0"), find("r1"), find("r2"));
        handle.stop().await;
        let reversed = r2.arrival < r1.arrival && r1.arrival < r0.arrival;
        let spread = r0.arrival.saturating_duration_since(r2.arrival);
        if attempt == 1 && !(reversed && spread < bench_sim::order::MAX_WAIT) {
            eprintln!("the machine delivered them otherwise ({spread:?} apart); once more");
            continue;
        }
        assert!(reversed, "the machine delivered them last first");
        assert!(
            spread < bench_sim::order::MAX_WAIT,
            "within the wait: {spread:?}"
        );
        let start = |t: &bench_sim::truth::RequestTruth| t.prefill_start.expect("prefilled");
        // The engine started with the first announced, alone, and took the others in order.
        assert!(start(&r0) >= r0.arrival);
        assert!(start(&r0) < start(&r1), "r0 before r1");
        assert!(start(&r1) < start(&r2), "r1 before r2");
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_that_repeats_the_last_one_keeps_its_counts_and_counts_what_it_adds() {
    let (a, b, c) = (body(300), body(500), body(700));
    let announced = sim().await;
    let first = announced.pretokenize(&[a.clone(), b.clone()]).await;
    assert_eq!((first.known, first.counted), (2, 2));
    send(&announced.url(), &[a.clone(), b.clone()], &[0, 0]).await;
    // `b` run again, and a new prompt: both known ahead, only the new one counted.
    let second = announced.pretokenize(&[b.clone(), c.clone()]).await;
    assert_eq!((second.known, second.counted), (2, 1));
    send(&announced.url(), &[b.clone(), c.clone()], &[0, 10]).await;
    let ahead = announced.schedule();
    let mut tokens: Vec<u64> = announced.truth().iter().map(|t| t.prompt_tokens).collect();
    announced.stop().await;
    assert_eq!((ahead.prompts_known, ahead.prompts_counted), (4, 0));
    // The same requests unannounced, each counted on arrival.
    let counted = sim().await;
    send(&counted.url(), &[a, b.clone(), b, c], &[0, 0, 0, 0]).await;
    let on_arrival = counted.schedule();
    let mut expected: Vec<u64> = counted.truth().iter().map(|t| t.prompt_tokens).collect();
    counted.stop().await;
    assert_eq!(on_arrival.prompts_counted, 4);
    tokens.sort_unstable();
    expected.sort_unstable();
    assert_eq!(tokens, expected);
    assert_eq!(
        expected.windows(2).filter(|w| w[0] != w[1]).count(),
        2,
        "{expected:?}"
    );
}
