//! The standard HTTP stack as a second transport (`--transport standard`): `reqwest` carries the
//! request and `eventsource-stream` splits the reply into events.
//!
//! What it gives over the native transport ([`crate::transport`]): HTTP/2 where a `https://`
//! server offers it (ALPN; `http://` stays HTTP/1.1, as no server here offers HTTP/2 in the
//! clear), proxies from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`), and every
//! operating system `reqwest` runs on. What it costs: an event is stamped when the body stream
//! yields the bytes that complete it, after the connection task has read them and handed them
//! over, so a busy client makes events late, and each read costs two wake-ups instead of one
//! (the figures are in docs/performance.md).
//!
//! Events are stamped with the time the chunk that completed them was yielded: events completed
//! by one chunk share its time, as they share a read on the native transport. Like a browser, and
//! unlike the native decoder, `eventsource-stream` drops a last event the server never ended with
//! a blank line.

use crate::stream::SseFrame;
use crate::transport::{Flow, ReadStats, Status, TransportError};
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest error body kept from a failed response.
const ERROR_BODY_LIMIT: usize = 4096;

/// One endpoint over `reqwest`, with its connection pool.
#[derive(Debug)]
pub struct Standard {
    http: reqwest::Client,
    url: reqwest::Url,
    reads: Mutex<ReadStats>,
    /// Longest wait for any bytes of a response.
    idle_timeout: Option<Duration>,
}

impl Standard {
    /// For an `http://` or `https://` `url`, trusting `ca_cert` (PEM) too; connections are kept
    /// open for reuse however long they idle, as the native transport keeps them.
    pub fn new(
        url: reqwest::Url,
        ca_cert: Option<&Path>,
        idle_timeout: Option<Duration>,
    ) -> std::io::Result<Self> {
        let http = crate::tls::http_client(ca_cert)?
            .tcp_nodelay(true)
            .pool_idle_timeout(None)
            // A redirect is the server's answer, as on the native transport, not a detour.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            http,
            url,
            reads: Mutex::new(ReadStats::default()),
            idle_timeout,
        })
    }

    /// What reads have seen since the last call, resetting the tally. Every read is stamped when
    /// the body stream yields it.
    pub fn take_read_stats(&self) -> ReadStats {
        self.reads
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Posts `body` and hands every event of a 200 reply to `on_event` with the instant the chunk
    /// that completed it was yielded. A body that runs more than `max_event_bytes` past the last
    /// complete event ends the exchange with [`TransportError::EventTooLong`].
    pub async fn post(
        &self,
        headers: &[(&str, &str)],
        body: bytes::Bytes,
        max_event_bytes: usize,
        mut on_event: impl FnMut(SseFrame<'_>, Instant) -> Flow,
    ) -> Result<Status, TransportError> {
        let response = match self.send(headers, body.clone()).await? {
            Ok(response) => response,
            // The server reset the connection before any response (a pooled connection whose
            // keep-alive close crossed the request, as on the native transport): it never read
            // the request, so the request goes once more. Any other failure is measured as is.
            Err(e) if reset_before_head(&e) => {
                self.send(headers, body).await?.map_err(send_error)?
            }
            Err(e) => return Err(send_error(e)),
        };
        let code = response.status().as_u16();
        if code != 200 {
            return Ok(Status {
                code,
                error_body: self.error_body(response).await,
            });
        }
        let origin = Instant::now();
        let checks = ChunkChecks::new(origin, max_event_bytes);
        let mut events = response
            .bytes_stream()
            .map(|chunk| checks.admit(chunk))
            .eventsource();
        let mut flow = Flow::Continue;
        let outcome = loop {
            let next = match self.within_idle(events.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break Ok(()),
                // The chunks read until then are still tallied below.
                Err(idle) => break Err(idle),
            };
            let event = match next {
                Ok(event) => event,
                Err(EventStreamError::Transport(e)) => break Err(e),
                Err(e) => break Err(TransportError::Malformed(e.to_string())),
            };
            checks.event_ended();
            // After the stream's end for the measurement, events still reach the handler (which
            // counts any a server sends after its end).
            if flow != Flow::Abort {
                let name = (event.event != "message").then_some(event.event.as_bytes());
                let frame = SseFrame {
                    event: name,
                    data: event.data.as_bytes(),
                };
                flow = on_event(frame, checks.last_chunk_at());
            }
            // The rest is read only to reuse the connection; a failure drops it.
            if flow == Flow::Abort {
                break Ok(());
            }
        };
        if let Ok(mut tally) = self.reads.lock() {
            tally.read_stamped += checks.chunks.load(Ordering::Relaxed);
        }
        outcome.map(|()| Status {
            code,
            error_body: Vec::new(),
        })
    }

    /// Sends the request and waits for its response head, within the idle limit.
    async fn send(
        &self,
        headers: &[(&str, &str)],
        body: bytes::Bytes,
    ) -> Result<reqwest::Result<reqwest::Response>, TransportError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.within_idle(request.send()).await
    }

    /// The first bytes of a failed reply's body.
    async fn error_body(&self, response: reqwest::Response) -> Vec<u8> {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while body.len() <= ERROR_BODY_LIMIT {
            match self.within_idle(chunks.next()).await {
                Ok(Some(Ok(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        body.truncate(ERROR_BODY_LIMIT);
        body
    }

    /// `step`, given up on when the idle limit passes first.
    async fn within_idle<T>(
        &self,
        step: impl std::future::Future<Output = T>,
    ) -> Result<T, TransportError> {
        match self.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, step)
                .await
                .map_err(|_| TransportError::Idle(limit)),
            None => Ok(step.await),
        }
    }
}

/// What the body's chunks are checked for and stamped with on their way to the event parser,
/// which would otherwise buffer without end: an event that never ends, or bytes that are not
/// UTF-8 (`eventsource-stream` holds them back, waiting for the rest of a character that never
/// comes).
struct ChunkChecks {
    origin: Instant,
    max_event_bytes: usize,
    /// When the newest chunk was yielded, nanoseconds after `origin`.
    last_chunk_ns: AtomicU64,
    /// Bytes since the last complete event.
    since_event: AtomicUsize,
    chunks: AtomicU64,
    /// The start of a character cut at the end of the last chunk.
    carry: Mutex<Vec<u8>>,
}

impl ChunkChecks {
    fn new(origin: Instant, max_event_bytes: usize) -> Self {
        Self {
            origin,
            max_event_bytes,
            last_chunk_ns: AtomicU64::new(0),
            since_event: AtomicUsize::new(0),
            chunks: AtomicU64::new(0),
            carry: Mutex::new(Vec::new()),
        }
    }

    /// Stamps `chunk` and passes it on, or the reason the body cannot be read as events.
    fn admit(&self, chunk: reqwest::Result<bytes::Bytes>) -> Result<bytes::Bytes, TransportError> {
        let bytes = chunk.map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        let at = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_chunk_ns.store(at, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
        let pending = self.since_event.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
        if pending > self.max_event_bytes {
            return Err(TransportError::EventTooLong(self.max_event_bytes));
        }
        self.check_utf8(&bytes)?;
        Ok(bytes)
    }

    fn check_utf8(&self, bytes: &[u8]) -> Result<(), TransportError> {
        let mut carry = self.carry.lock().map_err(|_| TransportError::Closed)?;
        let joined;
        let text: &[u8] = if carry.is_empty() {
            bytes
        } else {
            joined = [&carry[..], bytes].concat();
            &joined
        };
        match std::str::from_utf8(text) {
            Ok(_) => carry.clear(),
            // Cut inside a character: the rest comes with the next chunk.
            Err(e) if e.error_len().is_none() => {
                let tail = text[e.valid_up_to()..].to_vec();
                *carry = tail;
            }
            Err(e) => {
                return Err(TransportError::Malformed(format!(
                    "an event that is not UTF-8 (invalid byte {:#04x})",
                    text[e.valid_up_to()]
                )))
            }
        }
        Ok(())
    }

    fn event_ended(&self) {
        self.since_event.store(0, Ordering::Relaxed);
    }

    /// When the chunk that completed the newest event was yielded.
    fn last_chunk_at(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_chunk_ns.load(Ordering::Relaxed))
    }
}

/// Whether a request failed because the server reset its connection before any response: the
/// server's kernel resets a connection whose request arrived after its server closed it, or was
/// still unread when it did; a server that read the request and then closed sends no reset.
fn reset_before_head(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = s.source();
    }
    false
}

/// Why a request got no response: the connection could not be opened (`Connect`), or it was
/// open and the server closed or reset it before answering (`ClosedBeforeHead`, as the native
/// transport says it).
fn send_error(e: reqwest::Error) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut lost = None;
    while let Some(s) = source {
        let text = s.to_string();
        if s.is::<std::io::Error>() || text.contains("connection closed before message completed") {
            lost = Some(text);
        }
        source = s.source();
    }
    match lost {
        Some(detail) if !e.is_connect() => TransportError::ClosedBeforeHead(Some(detail)),
        _ => TransportError::Connect(std::io::Error::other(e)),
    }
}
