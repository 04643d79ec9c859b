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

/// (simulator hand-over, client read) of every output event, for `concurrency` streams of 20
/// tokens `itl_ms` apart.
async fn lags_at(concurrency: usize, itl_ms: u64) -> Vec<(Instant, Instant)> {
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
            lags.push((*w, *r));
        }
        // The simulator kept its own plan: hand-over no earlier than due.
        for (w, due) in sent.iter().zip(&t.token_due) {
            assert!(w >= due);
        }
    }
    handle.stop().await;
    lags
}

/// How late past its deadline an idle runtime may fire a timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// When this runtime woke a 1 ms timer late while it ran: the spans in which no task on it, a
/// reader included, could run, because the runtime was busy or the machine had stopped it.
///
/// Tokio's timer fires on whole milliseconds, so an idle runtime wakes a timer up to
/// [`TIMER_TICK`] after its deadline; only what comes after that counts as a stall. Counting the
/// tick too would take about half of every run for a stall (measured: 53-61%), and excuse half
/// of any lag, a hand-over stamped early included.
struct WakeProbe {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<(Instant, Instant)>>,
}

impl WakeProbe {
    fn start() -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut late = Vec::new();
            while !until.is_cancelled() {
                let deadline = Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(deadline.into()).await;
                let due = deadline + TIMER_TICK;
                late.push((due, Instant::now().max(due)));
            }
            late
        });
        Self { stop, task }
    }

    /// The (due, woke) span of every wake-up, in order; none overlap.
    async fn finish(self) -> Vec<(Instant, Instant)> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// How much of `from..to` falls in the probe's late spans (sorted, not overlapping), in ms.
fn stalled_ms(late: &[(Instant, Instant)], from: Instant, to: Instant) -> f64 {
    let first = late.partition_point(|(_, woke)| *woke <= from);
    late[first..]
        .iter()
        .take_while(|(due, _)| *due < to)
        .map(|(due, woke)| (to.min(*woke) - from.max(*due)).as_secs_f64() * 1e3)
        .sum()
}

/// What one run's lags were, in ms: raw, and net of the spans the probe saw the runtime stalled.
struct Lag {
    events: usize,
    mean: f64,
    max: f64,
    net_mean: f64,
    net_max: f64,
    longest_stall: f64,
}

impl Lag {
    fn of(lags: &[(Instant, Instant)], stalls: &[(Instant, Instant)]) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let raw: Vec<f64> = lags.iter().map(|(w, r)| ms(*r - *w)).collect();
        let net: Vec<f64> = lags
            .iter()
            .zip(&raw)
            .map(|((w, r), lag)| lag - stalled_ms(stalls, *w, *r))
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let stalled: Vec<f64> = stalls.iter().map(|(due, woke)| ms(*woke - *due)).collect();
        Self {
            events: lags.len(),
            mean: mean(&raw),
            max: max(&raw),
            net_mean: mean(&net),
            net_max: max(&net),
            longest_stall: max(&stalled),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_match_the_truth_at_1_64_and_1024_streams() {
    let _turn = HEAVY.lock().await;
    // Client and simulator share two cores and one runtime here. The raw client reads when its
    // task runs, so a busy runtime or machine delays it as much as it delays a timer: each
    // event's lag is taken net of the time a probe on the same runtime saw it stalled between
    // the hand-over and the read. A hand-over stamped before the bytes were really written
    // would show as lag no stall explains (1.5 ms early fails the single stream's bound).
    // Measured at 1 / 64 / 1,024 streams, net mean and max: idle 0.14 / 0.2 / 0.8 ms and
    // 0.4 / 5 / 10-15 ms; at 1,024 with a core taken by another process, 1.0-1.8 and 11-27 ms
    // (raw: 6-17 ms and up to 227 ms); with that and the whole process stopped for 226 ms as
    // well, 1.3-2.4 and 12-34 ms (raw: 15-24 ms and up to 426 ms).
    //
    // A run in which the machine stalled the runtime (a stall over 20 ms) is disturbed:
    // a thousand streams' reads queue behind the stall, and those woken after the probe wait
    // past what it saw, so such a run may fail its bounds and is run once more, saying so. The
    // second must hold.
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
        let lag = loop {
            tries += 1;
            let probe = WakeProbe::start();
            let lags = lags_at(conc, itl_ms).await;
            let lag = Lag::of(&lags, &probe.finish().await);
            eprintln!(
                "{conc} streams: {} events, read lag mean {:.3} ms, max {:.3} ms; net of the \
                 runtime's stalls mean {:.3} ms, max {:.3} ms (longest stall {:.3} ms)",
                lag.events, lag.mean, lag.max, lag.net_mean, lag.net_max, lag.longest_stall
            );
            let held = lag.net_max < max_bound && lag.net_mean < mean_bound;
            if held || tries > 1 || lag.longest_stall <= 20.0 {
                break lag;
            }
            eprintln!(
                "{conc} streams: the machine stalled the runtime for {:.1} ms; once more",
                lag.longest_stall
            );
        };
        assert_eq!(lag.events, conc * 20);
        assert!(
            lag.net_max < max_bound,
            "{conc} streams: max lag {} ms, {} ms of it not in a stall of the runtime",
            lag.max,
            lag.net_max
        );
        assert!(
            lag.net_mean < mean_bound,
            "{conc} streams: mean lag {} ms, {} ms of it not in a stall of the runtime",
            lag.mean,
            lag.net_mean
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
