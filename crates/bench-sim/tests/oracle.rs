//! The simulator as an oracle: a minimal client of its own (reqwest and `eventsource-stream`,
//! none of the project's client code) streams from it, and the instants it reads each event at
//! must match the simulator's truth: never before the hand-over, and within a small bound after
//! it, at 1, 64 and 1,024 concurrent streams. Also the wire behaviour and faults a client relies
//! on.

use bench_sim::timing::Timing;
use bench_sim::truth::TruthOutcome;
use bench_sim::{SimConfig, SimHandle, Simulator};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Tests that load both cores take turns: two 1,000-stream tests at once would measure each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sim(ttft_ms: u64, itl_ms: u64, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::preset("m", "fixed").expect("preset");
    cfg.timing = Timing::Fixed {
        ttft: Duration::from_millis(ttft_ms),
        itl: Duration::from_millis(itl_ms),
    };
    tweak(&mut cfg);
    Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("starts")
}

/// What the client saw on one stream: the reply id and (read instant, token events in it).
struct Seen {
    id: u64,
    reads: Vec<(Instant, usize)>,
}

/// Streams one completion through `eventsource-stream`, an SSE parser none of the project's code
/// shares, and stamps every event with when the chunk that completed it was read. Checks the
/// stream as a client relies on it: one id throughout, a token per event, the usage event with
/// the count of tokens sent, and `[DONE]` last.
async fn stream(http: &reqwest::Client, url: &str, max_tokens: u32) -> Seen {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    let body = format!(
        r#"{{"model":"m","prompt":"hello there","max_tokens":{max_tokens},"stream":true,"stream_options":{{"include_usage":true}},"ignore_eos":true}}"#
    );
    let resp = http
        .post(format!("{url}/v1/completions"))
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap_or_default();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let read_at = std::sync::Mutex::new(Instant::now());
    let mut events = resp
        .bytes_stream()
        .inspect(|_| *read_at.lock().expect("not poisoned") = Instant::now())
        .eventsource();
    let mut seen = Seen {
        id: u64::MAX,
        reads: Vec::new(),
    };
    let (mut usage, mut done) = (None, false);
    // `"id":"cmpl-<hex>"` as the first event gave it; every event must carry the same.
    let mut id_field = String::new();
    while let Some(event) = events.next().await {
        let event = event.expect("a well-formed event");
        assert!(!done, "nothing after [DONE]: {}", event.data);
        if event.data == "[DONE]" {
            done = true;
            continue;
        }
        if id_field.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
            let hex = v["id"].as_str().and_then(|i| i.strip_prefix("cmpl-"));
            seen.id = u64::from_str_radix(hex.expect("a cmpl- id"), 16).expect("hex id");
            id_field = format!(r#""id":"cmpl-{:016x}""#, seen.id);
        }
        assert!(
            event.data.contains(&id_field),
            "one id per stream: {}",
            event.data
        );
        // Token events are read as they come (cheaply: a thousand streams share this runtime
        // with the simulator); the one event without a token carries the usage.
        if event.data.contains(r#""text":"#) {
            let at = *read_at.lock().expect("not poisoned");
            match seen.reads.last_mut() {
                Some((last, n)) if *last == at => *n += 1,
                _ => seen.reads.push((at, 1)),
            }
        } else {
            let v: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
            assert_eq!(
                v["choices"].as_array().map(Vec::len),
                Some(0),
                "{}",
                event.data
            );
            usage = v["usage"]["completion_tokens"].as_u64();
        }
    }
    assert!(done, "the stream ends with [DONE]");
    let tokens = seen.reads.iter().map(|r| r.1).sum::<usize>() as u64;
    assert_eq!(usage, Some(tokens), "usage counts every token event");
    seen
}

/// Max and mean of (client read - simulator hand-over) over every output event, in ms, for
/// `concurrency` streams of 20 tokens `itl_ms` apart.
async fn lag_at(concurrency: usize, itl_ms: u64) -> (f64, f64, usize) {
    let handle = sim(50, itl_ms, |_| {}).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("client");
    let url = handle.url();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { stream(&http, &url, 20).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task"));
    }
    let truth: HashMap<u64, _> = handle.truth().into_iter().map(|t| (t.id, t)).collect();
    let mut lags = Vec::new();
    for s in &seen {
        let t = &truth[&s.id];
        assert_eq!(t.outcome, TruthOutcome::Completed);
        assert_eq!(t.tokens_sent(), 20);
        let sent: Vec<Instant> = t.output_sent().collect();
        // Expand each read to the events it carried, in order.
        let reads: Vec<Instant> = s
            .reads
            .iter()
            .flat_map(|(at, n)| std::iter::repeat_n(*at, *n))
            .collect();
        assert_eq!(
            reads.len(),
            sent.len(),
            "every event the simulator sent was read"
        );
        for (r, w) in reads.iter().zip(&sent) {
            assert!(r >= w, "read before the simulator handed the event over");
            lags.push((*r - *w).as_secs_f64() * 1e3);
        }
        // The simulator kept its own plan: hand-over no earlier than due.
        for (w, due) in sent.iter().zip(&t.token_due) {
            assert!(w >= due);
        }
    }
    let max = lags.iter().copied().fold(0.0, f64::max);
    let mean = lags.iter().sum::<f64>() / lags.len() as f64;
    handle.stop().await;
    (max, mean, lags.len())
}

/// How late this runtime wakes a 1 ms timer while it runs: the delay any read on it can have
/// from a busy runtime or a busy machine, apart from the reader's own work.
struct WakeProbe {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl WakeProbe {
    fn start() -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut late = Vec::new();
            while !until.is_cancelled() {
                let asked = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                late.push((asked.elapsed().as_secs_f64() - 0.001) * 1e3);
            }
            late
        });
        Self { stop, task }
    }

    /// (mean, max) lateness in ms.
    async fn finish(self) -> (f64, f64) {
        self.stop.cancel();
        let late = self.task.await.unwrap_or_default();
        let mean = late.iter().sum::<f64>() / late.len().max(1) as f64;
        (mean, late.iter().copied().fold(0.0, f64::max))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_match_the_truth_at_1_64_and_1024_streams() {
    let _turn = HEAVY.lock().await;
    // Client and simulator share two cores and one runtime here; measured on such a machine
    // when idle: mean 0.03 / 0.2 / 1.2 ms and max 0.05 / 0.8 / 22 ms. The raw client reads when
    // its task runs, so a busy runtime or machine delays it as much as it delays a timer: the
    // bounds stretch by what a probe on the same runtime measured meanwhile. A hand-over stamped
    // before the bytes were really written would show as a lag no probe explains.
    //
    // A run in which the machine stalled the runtime (a wake-up over 20 ms late) is disturbed:
    // a thousand streams' reads queue behind the stall by more than a timer's lateness shows, so
    // such a run may fail its bounds and is run once more, saying so. The second must hold.
    //
    // The thousand streams send a token every 50 ms, not 10: 20,000 events a second that this
    // test's own unoptimised client must parse. At 100,000 a second, with one of the two cores
    // taken by another process, the client itself fell behind by 22 ms on average, which says
    // nothing of the hand-over stamps under test.
    for (conc, itl_ms, max_bound, mean_bound) in [
        (1, 10, 5.0, 1.0),
        (64, 10, 20.0, 3.0),
        (1024, 50, 150.0, 10.0),
    ] {
        let mut tries = 0;
        let (max, mean, events, probe_mean, probe_max) = loop {
            tries += 1;
            let probe = WakeProbe::start();
            let (max, mean, events) = lag_at(conc, itl_ms).await;
            let (probe_mean, probe_max) = probe.finish().await;
            eprintln!(
                "{conc} streams: {events} events, read lag mean {mean:.3} ms, max {max:.3} ms; \
                 runtime wake-up lateness mean {probe_mean:.3} ms, max {probe_max:.3} ms"
            );
            let held = max < max_bound + probe_max && mean < mean_bound + probe_mean;
            if held || tries > 1 || probe_max <= 20.0 {
                break (max, mean, events, probe_mean, probe_max);
            }
            eprintln!(
                "{conc} streams: the machine stalled the runtime for {probe_max:.1} ms; once more"
            );
        };
        assert_eq!(events, conc * 20);
        assert!(
            max < max_bound + probe_max,
            "{conc} streams: max lag {max} ms (the runtime woke up to {probe_max} ms late)"
        );
        assert!(
            mean < mean_bound + probe_mean,
            "{conc} streams: mean lag {mean} ms (the runtime woke {probe_mean} ms late on average)"
        );
    }
}

#[tokio::test]
async fn errors_match_vllm_bodies() {
    let handle = sim(1, 1, |c| c.max_model_len = 100).await;
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(format!("{}/v1/completions", handle.url()))
            .body(body)
            .send()
    };
    let r = post(r#"{"model":"gpt-4","prompt":"x"}"#)
        .await
        .expect("reply");
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(
        v["error"]["message"],
        "The model `gpt-4` does not exist. Valid aliases: m."
    );
    let r = post(r#"{"model":"m","prompt":"x","max_tokens":400}"#)
        .await
        .expect("reply");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["error"]["param"], "max_tokens");
    let r = post(r#"{"model":"m","prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100]}"#).await.expect("reply");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["error"]["param"], "input_tokens");
    // prompt + max_tokens over the limit is clamped, not refused (as vLLM does).
    let r = post(r#"{"model":"m","prompt":[1,2,3,4,5,6,7,8,9,10],"max_tokens":95}"#)
        .await
        .expect("reply");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 90);
    let r = post("{not json").await.expect("reply");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/nope", handle.url()))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.expect("text"), r#"{"detail":"Not Found"}"#);
    handle.stop().await;
}

#[tokio::test]
async fn slow_start_and_scripted_restart() {
    let handle = sim(1, 200, |c| {
        c.slow_start = Duration::from_millis(300);
        c.restart_after = Some(Duration::from_millis(600));
        c.restart_downtime = Duration::from_millis(400);
    })
    .await;
    let http = reqwest::Client::new();
    let health = || async {
        http.get(format!("{}/health", handle.url()))
            .send()
            .await
            .expect("reply")
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 503, "not ready during slow start");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(health().await, 200);
    // A long stream is cut by the restart.
    let mut resp = http
        .post(format!("{}/v1/completions", handle.url()))
        .body(r#"{"model":"m","prompt":"x","max_tokens":50,"stream":true}"#)
        .send()
        .await
        .expect("sent");
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the restart cuts open streams");
    assert_eq!(health().await, 503, "down while restarting");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(health().await, 200, "back after the downtime");
    assert!(handle
        .truth()
        .iter()
        .any(|t| t.outcome == TruthOutcome::Restarted));
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_engine_keeps_its_schedule_with_a_thousand_streams() {
    let _turn = HEAVY.lock().await;
    let handle = {
        let mut cfg = SimConfig::preset("m", "small-tp1").expect("preset");
        cfg.time_scale = 1.0;
        Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("starts")
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (http, url) = (http.clone(), handle.url());
            tokio::spawn(async move { stream(&http, &url, 10).await })
        })
        .collect();
    for t in tasks {
        let s = t.await.expect("task");
        assert_eq!(s.reads.iter().map(|r| r.1).sum::<usize>(), 10);
    }
    let schedule = handle.schedule();
    eprintln!("{schedule:?}");
    // 1,000 sequences decode in one batch of ~90 ms steps. What the engine controls is its own
    // work per step; how late its thread woke depends on the machine too, so lateness is held to
    // what the OS says the thread waited for a core, plus the sleep's precision per step.
    if let Some(thread) = schedule.engine_thread {
        let steps = schedule.steps.count as f64;
        assert!(
            thread.cpu_seconds / steps < 0.005,
            "the engine's own work per step: {:.3} ms",
            thread.cpu_seconds / steps * 1e3
        );
        assert!(
            schedule.steps.sum_seconds <= thread.runqueue_wait_seconds + steps * 0.000_5,
            "steps were late by {:.1} ms in all, of which the machine explains {:.1} ms: {schedule:?}",
            schedule.steps.sum_seconds * 1e3,
            thread.runqueue_wait_seconds * 1e3
        );
    } else {
        assert!(schedule.steps.max_seconds < 0.05, "{schedule:?}");
    }
    handle.stop().await;
}
