//! Broken and hostile servers: whatever a server sends (or does not), each request fails with its
//! reason, memory stays bounded, and the run goes on to its end.
//!
//! Each scenario is a raw TCP server that reads one request and answers it the broken way.

use crate::support::{config, run, TRANSPORTS};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a scripted server does once it has read a request.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// A 200 event stream whose one `data:` line never ends.
    EndlessEvent,
    /// HTTP 500 with a body that says it is a gigabyte long.
    GigabyteErrorBody,
    /// An event whose JSON is not UTF-8.
    InvalidUtf8,
    /// A redirect elsewhere, on a connection the server then closes, as it says (a close it
    /// did not announce would race the client's next request on the kept-alive connection).
    Redirect,
    /// Accepts, reads the request, never answers.
    Silent,
    /// Sends the 200 head, then closes.
    CloseAfterHeaders,
    /// Reads the request and closes without a word.
    CloseUnanswered,
    /// One token event, then silence.
    StallAfterOneEvent,
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const EVENT: &str = r#"data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"a","finish_reason":null}]}"#;

fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

async fn answer(mut sock: tokio::net::TcpStream, how: Misbehaviour) {
    let mut buf = vec![0u8; 64 * 1024];
    // Read the request (head and a small body); what it says does not matter here.
    let _ = tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await;
    let _ = match how {
        Misbehaviour::EndlessEvent => {
            let _ = sock.write_all(SSE_HEAD).await;
            let _ = sock.write_all(&chunk(b"data: {\"choices\": \"")).await;
            let filler = chunk(&[b'x'; 16 * 1024]);
            // Up to 64 MiB, far past any sane event, unless the client gives up first.
            for _ in 0..4096 {
                if sock.write_all(&filler).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        Misbehaviour::GigabyteErrorBody => {
            let head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1000000000\r\n\r\n";
            let _ = sock.write_all(head).await;
            let filler = vec![b'e'; 64 * 1024];
            for _ in 0..16_384 {
                if sock.write_all(&filler).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        Misbehaviour::InvalidUtf8 => {
            let _ = sock.write_all(SSE_HEAD).await;
            sock.write_all(&chunk(b"data: {\"choices\": [{\"text\": \"\xff\xfe\"}]}\n\n"))
                .await
        }
        Misbehaviour::Redirect => {
            sock.write_all(b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere.invalid/v1/completions\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
        }
        Misbehaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
        Misbehaviour::CloseAfterHeaders => sock.write_all(SSE_HEAD).await,
        Misbehaviour::CloseUnanswered => Ok(()),
        Misbehaviour::StallAfterOneEvent => {
            let _ = sock.write_all(SSE_HEAD).await;
            let _ = sock.write_all(&chunk(format!("{EVENT}\n\n").as_bytes())).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
    };
}

/// A server on 127.0.0.1:0 that answers every connection `how`.
async fn server(how: Misbehaviour) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(answer(sock, how));
        }
    });
    url
}

/// Two requests through each transport against a server that misbehaves `how`: all fail, each
/// with `reason`. One report per transport.
async fn both_fail(
    how: Misbehaviour,
    reason: &str,
    tweak: impl Fn(&mut bench_core::RunConfig),
) -> Vec<bench_core::RunReport> {
    let url = server(how).await;
    let mut reports = Vec::new();
    for transport in TRANSPORTS {
        let mut c = config(&url, 2, 16, 4);
        c.server_metrics_interval = None;
        c.transport = transport;
        tweak(&mut c);
        let report = tokio::time::timeout(Duration::from_secs(60), run(&c))
            .await
            .expect("the run ends");
        assert_eq!(report.metrics.completed, 0, "{transport:?}");
        let groups: Vec<(&String, u64)> = report
            .metrics
            .failures
            .iter()
            .map(|(k, g)| (k, g.count))
            .collect();
        assert_eq!(
            groups,
            vec![(&reason.to_string(), 2)],
            "{transport:?}: {:?}",
            report.metrics.failures
        );
        reports.push(report);
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_event_fails_the_request_instead_of_filling_memory() {
    for r in both_fail(Misbehaviour::EndlessEvent, "malformed_event", |_| {}).await {
        let example = &r.metrics.failures["malformed_event"].example;
        assert!(example.contains("without its end"), "{example}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_error_body_is_cut_to_its_start() {
    for r in both_fail(Misbehaviour::GigabyteErrorBody, "http_500", |_| {}).await {
        assert!(r.metrics.failures["http_500"].example.len() < 5000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_redirects_and_early_closes_are_named() {
    both_fail(Misbehaviour::InvalidUtf8, "malformed_event", |_| {}).await;
    both_fail(Misbehaviour::Redirect, "http_302", |_| {}).await;
    both_fail(Misbehaviour::CloseAfterHeaders, "stream_cut", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_drops_unanswered_is_a_cut_reply_not_a_failure_to_connect() {
    // The connection opened and the request went out: "is the server up, is the URL right?"
    // (a connect failure's advice) would mislead. Both transports say the same.
    for r in both_fail(Misbehaviour::CloseUnanswered, "stream_cut", |_| {}).await {
        let example = &r.metrics.failures["stream_cut"].example;
        assert!(example.contains("before the response head"), "{example}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_ends_by_the_idle_timeout_or_the_total_one_each_its_own_reason() {
    let idle = |c: &mut bench_core::RunConfig| c.idle_timeout = Some(Duration::from_millis(300));
    both_fail(Misbehaviour::Silent, "idle_timeout", idle).await;
    both_fail(Misbehaviour::StallAfterOneEvent, "idle_timeout", idle).await;
    let total = |c: &mut bench_core::RunConfig| {
        c.idle_timeout = None;
        c.request_timeout = Duration::from_millis(500);
    };
    both_fail(Misbehaviour::StallAfterOneEvent, "timeout", total).await;
}
