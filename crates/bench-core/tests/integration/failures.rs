//! Every way a request can fail is recorded with its reason and never counted as completed.

use crate::support::{config, fixed_sim, run, run_with, TRANSPORTS};
use bench_core::record::FailureReason;
use bench_sim::SimConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Four requests through each transport against a simulator `tweak`ed to fail them; one report
/// per transport.
async fn failures_with(
    tweak: impl Fn(&mut SimConfig),
    timeout: Option<Duration>,
) -> Vec<bench_core::RunReport> {
    let mut reports = Vec::new();
    for transport in TRANSPORTS {
        let sim = fixed_sim(5, 2, &tweak).await;
        let mut c = config(&sim.url(), 4, 32, 10);
        c.transport = transport;
        if let Some(t) = timeout {
            c.request_timeout = t;
        }
        reports.push(run(&c).await);
        sim.stop().await;
    }
    reports
}

/// The one failure reason of a run where nothing completed, and its count.
fn only_group(report: &bench_core::RunReport) -> (String, u64) {
    let transport = report.client.transport;
    assert_eq!(
        report.metrics.completed, 0,
        "{transport:?}: {:?}",
        report.metrics.failures
    );
    assert_eq!(
        report.metrics.failures.len(),
        1,
        "{transport:?}: {:?}",
        report.metrics.failures
    );
    let (k, g) = report.metrics.failures.iter().next().expect("one group");
    (k.clone(), g.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_keeps_the_servers_message() {
    for r in failures_with(|c| c.faults.http_500 = 1.0, None).await {
        assert_eq!(only_group(&r), ("http_500".into(), 4));
        assert!(r.metrics.failures["http_500"]
            .example
            .contains("Simulated internal server error"));
        assert_eq!(
            r.metrics.ttft_ms.count, 0,
            "failures never enter latency figures"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_cut_and_malformed_event() {
    for r in failures_with(|c| c.faults.error_event = 1.0, None).await {
        assert_eq!(only_group(&r).0, "server_error_event");
    }
    for r in failures_with(|c| c.faults.cut = 1.0, None).await {
        assert_eq!(only_group(&r).0, "stream_cut");
    }
    for r in failures_with(|c| c.faults.malformed = 1.0, None).await {
        assert_eq!(only_group(&r).0, "malformed_event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_past_the_timeout_is_a_timeout() {
    let stall = |c: &mut SimConfig| {
        c.faults.stall = 1.0;
        c.faults.stall_for = Duration::from_secs(3);
    };
    for r in failures_with(stall, Some(Duration::from_millis(400))).await {
        assert_eq!(only_group(&r), ("timeout".into(), 4));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_model_is_an_http_404_with_vllms_message() {
    let sim = fixed_sim(5, 2, |_| {}).await;
    for transport in TRANSPORTS {
        let mut c = config(&sim.url(), 2, 16, 4);
        c.model = "gpt-4".into();
        c.transport = transport;
        let r = run(&c).await;
        assert_eq!(only_group(&r).0, "http_404");
        assert!(r.metrics.failures["http_404"]
            .example
            .contains("does not exist"));
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_connect_failure() {
    // Bind then drop a listener: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for transport in TRANSPORTS {
        let mut c = config(&format!("http://127.0.0.1:{port}"), 3, 16, 4);
        c.transport = transport;
        let r = run(&c).await;
        assert_eq!(only_group(&r), ("connect".into(), 3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_reports_what_was_measured() {
    let sim = fixed_sim(20, 20, |_| {}).await;
    let mut c = config(&sim.url(), 40, 16, 50);
    c.max_concurrency = std::num::NonZeroUsize::new(4);
    c.interrupt_grace = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    // Stopped once the first wave has finished at the server and the second is in flight,
    // whatever the machine's pace.
    let watch = async {
        while sim.truth().len() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    };
    let (r, ()) = tokio::join!(run_with(&c, &stop), watch);
    assert!(r.interrupted);
    assert!(r.not_sent > 0, "stopping must stop sending");
    assert!(
        r.metrics.completed > 0,
        "requests finished before the signal are kept"
    );
    let interrupted = r
        .records
        .iter()
        .filter(|x| x.outcome == Err(FailureReason::Interrupted))
        .count();
    assert_eq!(
        interrupted, 4,
        "requests in flight past the grace period are aborted"
    );
    assert_eq!(r.metrics.completed + r.metrics.failed + r.not_sent, 40);
    sim.stop().await;
}

/// vLLM's recorded stream as one HTTP reply, re-chunked with one event per chunk.
fn transcript_reply() -> String {
    let transcript = std::fs::read_to_string(
        crate::support::testdata().join("transcripts/vllm-completions-stream.txt"),
    )
    .expect("transcript");
    let (head, body) = transcript.split_once("\r\n\r\n").expect("head and body");
    let mut reply = format!("{head}\r\n\r\n");
    for event in body.split_terminator("\n\n") {
        let event = format!("{event}\n\n");
        reply.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    reply.push_str("0\r\n\r\n");
    reply
}

/// Reads one request (its head, then as many body bytes as it announces); `false` when the
/// connection ends first.
async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let body_at = loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_at]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < body_at + length {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        request.extend_from_slice(&buf[..n]);
    }
    true
}

/// What a scripted keep-alive server does with a connection after its first reply.
#[derive(Clone, Copy)]
enum AfterFirstReply {
    /// Closes it without announcing it, as servers do when an idle keep-alive times out.
    Close,
    /// Keeps it open and reads the next request, but never answers it (a server too busy to
    /// send the response head).
    NeverAnswer,
    /// Keeps it open until the next request arrives, then closes it unread: the server's
    /// keep-alive close that reaches the client only after its next request went out, as on a
    /// busy machine. The server's kernel answers with a reset.
    CloseUnreadOnNext,
}

/// A server that answers the first request of each connection with vLLM's recorded stream, then
/// does `after`. Returns its URL, how many connections it accepted and how many requests it read.
async fn keep_alive_server(after: AfterFirstReply) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let reply = transcript_reply();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (accepted, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (connections, reads) = (Arc::clone(&accepted), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let (reply, reads) = (reply.clone(), Arc::clone(&reads));
            tokio::spawn(async move {
                if !read_request(&mut socket).await {
                    return;
                }
                reads.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(reply.as_bytes()).await;
                match after {
                    AfterFirstReply::Close => {}
                    AfterFirstReply::NeverAnswer => {
                        while read_request(&mut socket).await {
                            reads.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    AfterFirstReply::CloseUnreadOnNext => {
                        let _ = socket.readable().await;
                    }
                }
            });
        }
    });
    (url, accepted, requests)
}

/// `prompts` requests (and one warm-up) to the scripted keep-alive server, one at a time, so
/// each reuses the connection the one before left in the pool; no scrapes of /metrics, which
/// would be connections of their own.
fn one_at_a_time(url: &str, prompts: usize) -> bench_core::RunConfig {
    let mut c = config(url, prompts, 16, 5);
    c.model = "tiny-llama".into();
    c.max_concurrency = std::num::NonZeroUsize::new(1);
    c.num_warmups = 1;
    c.server_metrics_interval = None;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_reset_unread_is_replaced_not_failed() {
    // The close comes after the next request was written (the client saw the connection
    // alive), and the server's kernel resets it: the request was never read, so it goes again,
    // on either transport.
    for transport in TRANSPORTS {
        let (url, accepted, requests) = keep_alive_server(AfterFirstReply::CloseUnreadOnNext).await;
        let mut c = one_at_a_time(&url, 4);
        c.transport = transport;
        let report = run(&c).await;
        assert_eq!(
            report.metrics.completed, 4,
            "{transport:?}: {:?}",
            report.metrics.failures
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            5,
            "{transport:?}: each request read once"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 5, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_closed_is_replaced_not_failed() {
    // Each reply leaves a connection in the pool that the server has already closed: the next
    // request finds it dead before any response and must go again on a fresh one. The native
    // transport only: reqwest drops such a connection when its connection task has seen the
    // close, which a busy machine can delay past the next request.
    let (url, accepted, _) = keep_alive_server(AfterFirstReply::Close).await;
    let report = run(&one_at_a_time(&url, 4)).await;
    assert_eq!(report.metrics.completed, 4, "{:?}", report.metrics.failures);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "one connection per request, warm-up included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_whose_server_is_slow_is_never_sent_the_request_twice() {
    // The server read the request on the pooled connection and is slow to answer: going again
    // elsewhere would make it serve the request twice. It fails by the idle timeout instead.
    for transport in TRANSPORTS {
        let (url, _, requests) = keep_alive_server(AfterFirstReply::NeverAnswer).await;
        let mut c = one_at_a_time(&url, 1);
        c.idle_timeout = Some(Duration::from_millis(300));
        c.transport = transport;
        let report = run(&c).await;
        assert_eq!(
            report.metrics.failures.keys().collect::<Vec<_>>(),
            ["idle_timeout"],
            "{transport:?}: {:?}",
            report.metrics.failures
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            2,
            "{transport:?}: the warm-up and the measured request, each sent once"
        );
    }
}
