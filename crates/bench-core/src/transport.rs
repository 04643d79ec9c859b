//! A lean HTTP/1.1 transport for `http://` and `https://` servers: each request's own task writes
//! the request and reads its socket, so an arriving event costs one wake-up and one read, and
//! every read carries the time its bytes arrived (`socket`).
//!
//! A general HTTP client reads the socket in a connection task and hands each chunk over a
//! channel to the task that polls the body: two wake-ups per read. With thousands of streams each
//! sending a token every few milliseconds, that hand-over is most of the client's CPU
//! (docs/performance.md). This transport speaks exactly what a streaming completion needs:
//! POST with a JSON body, a response head parsed with `httparse`, and a body framed by
//! `Content-Length`, `chunked` encoding ([`crate::chunked`]) or the connection's end. Connections
//! are kept alive and reused. It also tallies how long arrived data waited to be read
//! ([`ReadStats`]). `https://` runs the same over TLS ([`crate::tls`]).

use crate::chunked::ChunkedDecoder;
use crate::socket::{Arrival, PeerState, StampedStream};
use crate::tls::TlsStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most response-head bytes accepted.
const HEAD_LIMIT: usize = 64 * 1024;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 64;
/// Longest error body kept from a failed response.
const ERROR_BODY_LIMIT: usize = 4096;

/// Why an exchange failed before or while reading the body.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection failed: {0}")]
    Connect(std::io::Error),
    #[error("connection lost: {0}")]
    Io(std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("connection closed before the response ended")]
    Closed,
    /// Open, and closed or reset by the server before any response (with what the system
    /// said, if anything).
    #[error("connection closed before the response head{}", .0.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    ClosedBeforeHead(Option<String>),
    #[error("nothing arrived for {0:?}")]
    Idle(Duration),
    /// More than this many bytes without an event's end (a blank line).
    #[error("an event of over {} KiB without its end (a blank line)", .0 / 1024)]
    EventTooLong(usize),
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response's status and the first bytes of its body when it was not 200.
#[derive(Debug)]
pub struct Status {
    pub code: u16,
    pub error_body: Vec<u8>,
}

/// What the body handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The stream is over for the measurement (e.g. `[DONE]`); the rest is read only to reuse
    /// the connection.
    Finished,
    /// Stop now and drop the connection (a failure).
    Abort,
}

/// How long data waited in the socket before the client read it, over many reads.
#[derive(Debug)]
pub struct ReadStats {
    /// Nanoseconds between the kernel's arrival stamp and the read's return.
    pub waited_ns: hdrhistogram::Histogram<u64>,
    /// Reads whose bytes carried a kernel arrival stamp, and reads stamped when they returned.
    pub kernel_stamped: u64,
    pub read_stamped: u64,
}

impl Default for ReadStats {
    fn default() -> Self {
        Self {
            // Two significant figures (1% resolution), growing to whatever the waits need.
            waited_ns: hdrhistogram::Histogram::new(2).expect("2 significant figures is valid"),
            kernel_stamped: 0,
            read_stamped: 0,
        }
    }
}

impl ReadStats {
    fn record(&mut self, arrival: &Arrival) {
        if arrival.kernel {
            self.kernel_stamped += 1;
            let _ = self
                .waited_ns
                .record(u64::try_from(arrival.waited().as_nanos()).unwrap_or(u64::MAX));
        } else {
            self.read_stamped += 1;
        }
    }
}

/// HTTP/1.1 to one `http://host:port` origin, with a pool of idle connections.
#[derive(Debug)]
pub struct Transport {
    authority: String,
    path: String,
    /// For `https://`: the TLS configuration and the name to verify.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    idle: Mutex<Vec<Conn>>,
    reads: Mutex<ReadStats>,
    /// Longest wait for any bytes of a response: a server that stops sending is given up on.
    idle_timeout: Option<Duration>,
}

/// One connection, plain or encrypted.
#[derive(Debug)]
enum Conn {
    Plain(StampedStream),
    Tls(Box<TlsStream>),
}

impl Conn {
    async fn write_all(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        match self {
            Self::Plain(c) => c.write_all(parts).await,
            Self::Tls(c) => c.write_all(parts).await,
        }
    }

    async fn read_with<R>(&mut self, take: impl FnMut(&[u8], Arrival) -> R) -> std::io::Result<R> {
        match self {
            Self::Plain(c) => c.read_with(take).await,
            Self::Tls(c) => c.read_with(take).await,
        }
    }

    fn peek_state(&self) -> PeerState {
        match self {
            Self::Plain(c) => c.peek_state(),
            Self::Tls(c) => c.peek_state(),
        }
    }
}

impl Transport {
    /// For `http://` and `https://` URLs (the latter verified against Mozilla's roots); `None`
    /// for anything else.
    pub fn for_url(url: &reqwest::Url) -> Option<Self> {
        let tls = match url.scheme() {
            "https" => Some(crate::tls::client_config(None).ok()?),
            _ => None,
        };
        Self::with_tls(url, tls)
    }

    /// As [`Transport::for_url`], with `tls` as the configuration for `https://` (a private CA's
    /// roots, say). `None` for a URL that is neither, or `https://` without a configuration.
    /// Gives up on a response when no bytes arrive for `limit`.
    pub fn with_idle_timeout(mut self, limit: Option<Duration>) -> Self {
        self.idle_timeout = limit;
        self
    }

    pub fn with_tls(url: &reqwest::Url, tls: Option<Arc<rustls::ClientConfig>>) -> Option<Self> {
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => Some((config, url.host_str()?.to_string())),
            _ => return None,
        };
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        // `host_str` keeps an IPv6 address's brackets.
        let authority = format!("{host}:{port}");
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Some(Self {
            authority,
            path,
            tls,
            idle: Mutex::new(Vec::new()),
            reads: Mutex::new(ReadStats::default()),
            idle_timeout: None,
        })
    }

    /// What reads have seen since the last call (a phase's worth), resetting the tally.
    pub fn take_read_stats(&self) -> ReadStats {
        self.reads
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    fn head(&self, headers: &[(&str, &str)], body_len: usize) -> Vec<u8> {
        let mut h = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {body_len}\r\n",
            self.path, self.authority
        );
        for (k, v) in headers {
            h.push_str(k);
            h.push_str(": ");
            h.push_str(v);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// A pooled connection that is still open and quiet (one the server closed, or sent bytes
    /// on unasked, is dropped), else a fresh one. The flag says which.
    async fn connection(&self) -> Result<(Conn, bool), TransportError> {
        while let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            if c.peek_state() == PeerState::Quiet {
                return Ok((c, true));
            }
        }
        self.connection_fresh().await
    }

    async fn connection_fresh(&self) -> Result<(Conn, bool), TransportError> {
        let c = match &self.tls {
            None => StampedStream::connect(&self.authority)
                .await
                .map(Conn::Plain),
            Some((config, host)) => TlsStream::connect(&self.authority, host, Arc::clone(config))
                .await
                .map(|t| Conn::Tls(Box::new(t))),
        };
        Ok((c.map_err(TransportError::Connect)?, false))
    }

    /// Posts `body` and hands every run of body bytes to `on_body` with the instant the bytes
    /// arrived (the kernel's stamp where there is one, else when the read returned; see
    /// [`crate::socket`]), taken before any parsing.
    pub async fn post(
        &self,
        headers: &[(&str, &str)],
        body: &[u8],
        mut on_body: impl FnMut(&[u8], Instant) -> Flow,
    ) -> Result<Status, TransportError> {
        let head = self.head(headers, body.len());
        let mut reader = Reader {
            floor: Instant::now(),
            tally: &self.reads,
            idle: self.idle_timeout,
        };
        let (mut conn, reused) = self.connection().await?;
        let first = send_and_read_head(&mut conn, &head, body, &mut reader).await;
        let (response, leftover) = match first {
            Ok(r) => r,
            // A pooled connection the server closed just as the request went out (its keep-alive
            // ran out): the server never read the request, so it goes once more on a fresh
            // connection. A server that closes, or is slow, after the request reached it may have
            // the request, and is never sent it twice: that fails as measured.
            Err(u) if reused && u.unread() => {
                let (c, _) = self.connection_fresh().await?;
                conn = c;
                reader.floor = Instant::now();
                send_and_read_head(&mut conn, &head, body, &mut reader)
                    .await
                    .map_err(|u| before_head(u.error))?
            }
            Err(u) => return Err(before_head(u.error)),
        };
        let outcome = if response.code == 200 {
            read_body(&mut conn, &mut reader, &response, &leftover, &mut on_body)
                .await
                .map(|complete| (complete, Vec::new()))
        } else {
            let mut error_body = Vec::new();
            let _ = read_body(&mut conn, &mut reader, &response, &leftover, |b, _| {
                error_body.extend_from_slice(b);
                if error_body.len() > ERROR_BODY_LIMIT {
                    Flow::Abort
                } else {
                    Flow::Continue
                }
            })
            .await;
            Ok((false, error_body))
        };
        let (complete, error_body) = outcome?;
        if complete && !response.close && response.framing != Framing::UntilClose {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        Ok(Status {
            code: response.code,
            error_body,
        })
    }
}

/// One exchange's reads: the earliest instant the next bytes may be stamped with, and the
/// transport's tally.
struct Reader<'t> {
    floor: Instant,
    tally: &'t Mutex<ReadStats>,
    /// Longest wait for a read.
    idle: Option<Duration>,
}

impl Reader<'_> {
    /// Reads once and hands the bytes (empty at the end of the stream) and when they arrived to
    /// `take`.
    async fn read<R>(
        &mut self,
        conn: &mut Conn,
        mut take: impl FnMut(&[u8], Instant) -> R,
    ) -> Result<R, TransportError> {
        let Self { floor, tally, idle } = self;
        let read = conn.read_with(|bytes, arrival| {
            let arrival = arrival.not_before(*floor);
            *floor = arrival.at;
            if !bytes.is_empty() {
                if let Ok(mut tally) = tally.lock() {
                    tally.record(&arrival);
                }
            }
            take(bytes, arrival.at)
        });
        match *idle {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| TransportError::Idle(limit))?
                .map_err(TransportError::Io),
            None => read.await.map_err(TransportError::Io),
        }
    }
}

/// A connection lost after it was open and before any response arrived: the server took the
/// request (or the connection) and closed it unanswered.
fn before_head(e: TransportError) -> TransportError {
    match e {
        TransportError::Io(x) => TransportError::ClosedBeforeHead(Some(x.to_string())),
        TransportError::Closed => TransportError::ClosedBeforeHead(None),
        other => other,
    }
}

/// A request that got no response head, and whether the connection was already closed by the
/// server when the request had been written (so the server never read it).
struct Unanswered {
    error: TransportError,
    gone_at_send: bool,
}

impl Unanswered {
    /// Whether the server surely never read the request: the connection was gone when it was
    /// written, or the server reset it before any response. A reset comes from the server's
    /// kernel when the request arrived at a socket its server had closed, or was still unread
    /// when it closed it; a server that read the request and then closed sends no reset. On a
    /// busy machine a keep-alive close can reach the client only after the request went out,
    /// so the reset is the only sign it came first.
    fn unread(&self) -> bool {
        match &self.error {
            TransportError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            TransportError::Io(_) | TransportError::Closed => self.gone_at_send,
            _ => false,
        }
    }
}

/// A parsed response head.
struct ResponseHead {
    code: u16,
    framing: Framing,
    /// The server will close the connection after this response.
    close: bool,
    /// When the read that completed the head arrived (body bytes that came with it arrived then).
    at: Instant,
}

/// Writes the request and reads its response head ([`read_head`]).
async fn send_and_read_head(
    conn: &mut Conn,
    head: &[u8],
    body: &[u8],
    reader: &mut Reader<'_>,
) -> Result<(ResponseHead, Vec<u8>), Unanswered> {
    if let Err(e) = conn.write_all(&[head, body]).await {
        return Err(Unanswered {
            error: TransportError::Io(e),
            gone_at_send: true,
        });
    }
    let gone_at_send = conn.peek_state() == PeerState::Gone;
    read_head(conn, reader).await.map_err(|error| Unanswered {
        error,
        gone_at_send,
    })
}

/// Reads until the response head is complete. Returns the head and the body bytes that came
/// with it.
async fn read_head(
    conn: &mut Conn,
    reader: &mut Reader<'_>,
) -> Result<(ResponseHead, Vec<u8>), TransportError> {
    let mut buf = Vec::new();
    loop {
        let (n, at) = reader
            .read(conn, |bytes, at| {
                buf.extend_from_slice(bytes);
                (bytes.len(), at)
            })
            .await?;
        if n == 0 && buf.is_empty() {
            return Err(TransportError::Closed);
        }
        if n == 0 {
            return Err(TransportError::Malformed(
                "the connection closed inside the response head".into(),
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(0);
                let mut framing = Framing::UntilClose;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && value.to_ascii_lowercase().contains("chunked")
                    {
                        framing = Framing::Chunked;
                    } else if h.name.eq_ignore_ascii_case("content-length")
                        && framing != Framing::Chunked
                    {
                        let n = value.parse().map_err(|_| {
                            TransportError::Malformed(format!("content-length `{value}`"))
                        })?;
                        framing = Framing::Length(n);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = value.eq_ignore_ascii_case("close");
                    }
                }
                let head = ResponseHead {
                    code,
                    framing,
                    close,
                    at,
                };
                return Ok((head, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < HEAD_LIMIT => {}
            Ok(httparse::Status::Partial) => {
                return Err(TransportError::Malformed("response head too large".into()))
            }
            Err(e) => return Err(TransportError::Malformed(e.to_string())),
        }
    }
}

/// Reads the body to its end (or until `on_body` aborts), starting with the bytes that came with
/// the head. Returns whether the body was read completely.
async fn read_body(
    conn: &mut Conn,
    reader: &mut Reader<'_>,
    head: &ResponseHead,
    leftover: &[u8],
    mut on_body: impl FnMut(&[u8], Instant) -> Flow,
) -> Result<bool, TransportError> {
    let mut body = Body::new(head.framing);
    if let Some(complete) = body.feed(leftover, head.at, &mut on_body)? {
        return Ok(complete);
    }
    loop {
        let fed = reader
            .read(conn, |bytes, at| {
                if bytes.is_empty() {
                    return Ok(Some(match head.framing {
                        Framing::UntilClose => true,
                        _ if body.finished => false,
                        _ => return Err(TransportError::Closed),
                    }));
                }
                body.feed(bytes, at, &mut on_body)
            })
            .await?;
        if let Some(complete) = fed? {
            return Ok(complete);
        }
    }
}

/// Where a body stands: its framing, and whether the handler has all it wants.
struct Body {
    framing: Framing,
    chunked: ChunkedDecoder,
    /// Bytes still due under `Content-Length`.
    remaining: u64,
    /// The handler said [`Flow::Finished`]: the body's end is no longer awaited for it, only to
    /// reuse the connection.
    finished: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            chunked: ChunkedDecoder::default(),
            remaining: match framing {
                Framing::Length(n) => n,
                _ => u64::MAX,
            },
            finished: false,
        }
    }

    /// Hands the body bytes in `bytes` to `on_body`. `Some(complete)` once the exchange is over:
    /// `true` when the body ended, `false` when the handler aborted.
    fn feed(
        &mut self,
        bytes: &[u8],
        at: Instant,
        on_body: &mut impl FnMut(&[u8], Instant) -> Flow,
    ) -> Result<Option<bool>, TransportError> {
        // After the handler has all it wants, it still sees what follows (so it can count
        // events a server sends after its end); the body is read to its end to reuse the
        // connection either way.
        let mut flow = Flow::Continue;
        let mut deliver = |b: &[u8]| {
            if flow != Flow::Abort && !b.is_empty() {
                flow = on_body(b, at);
            }
        };
        match self.framing {
            Framing::Chunked => self
                .chunked
                .feed(bytes, &mut deliver)
                .map_err(TransportError::Malformed)?,
            Framing::Length(_) => {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                deliver(&bytes[..n]);
                self.remaining -= n as u64;
            }
            Framing::UntilClose => deliver(bytes),
        }
        match flow {
            Flow::Abort => return Ok(Some(false)),
            Flow::Finished => self.finished = true,
            Flow::Continue => {}
        }
        let ended = match self.framing {
            Framing::Chunked => self.chunked.is_done(),
            Framing::Length(_) => self.remaining == 0,
            Framing::UntilClose => false,
        };
        Ok(ended.then_some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_stats_keep_long_waits_and_count_stamp_sources() {
        let now = Instant::now();
        let mut stats = ReadStats::default();
        for ms in [0, 1, 30, 2_000] {
            stats.record(&Arrival {
                at: now - std::time::Duration::from_millis(ms),
                read_at: now,
                kernel: true,
            });
        }
        stats.record(&Arrival {
            at: now,
            read_at: now,
            kernel: false,
        });
        assert_eq!((stats.kernel_stamped, stats.read_stamped), (4, 1));
        let max_ms = stats.waited_ns.max() as f64 / 1e6;
        assert!((max_ms - 2_000.0).abs() < 20.0, "max {max_ms} ms");
        let median_ms = stats.waited_ns.value_at_quantile(0.5) as f64 / 1e6;
        assert!((median_ms - 1.0).abs() < 0.05, "median {median_ms} ms");
    }

    #[test]
    fn http_and_https_urls_get_this_transport() {
        let url = |u: &str| reqwest::Url::parse(u).expect("a URL");
        let t = Transport::for_url(&url("http://node12:8000/v1/completions")).expect("http");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str(), t.tls.is_some()),
            ("node12:8000", "/v1/completions", false)
        );
        let s =
            Transport::for_url(&url("https://api.example.com/v1/completions?x=1")).expect("https");
        assert_eq!(
            (s.authority.as_str(), s.path.as_str()),
            ("api.example.com:443", "/v1/completions?x=1")
        );
        assert_eq!(s.tls.map(|(_, host)| host), Some("api.example.com".into()));
        assert!(Transport::for_url(&url("ftp://example.com/v1/completions")).is_none());
        assert!(Transport::with_tls(&url("https://example.com/"), None).is_none());
        assert_eq!(
            Transport::for_url(&url("http://[::1]/v1/x")).map(|t| t.authority),
            Some("[::1]:80".into())
        );
    }
}
