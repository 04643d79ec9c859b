//! A lean HTTP/1.1 transport for `http://` servers: each request's own task writes the request
//! and reads its socket, so an arriving event costs one wake-up and one read.
//!
//! A general HTTP client reads the socket in a connection task and hands each chunk over a
//! channel to the task that polls the body: two wake-ups per read. With thousands of streams each
//! sending a token every few milliseconds, that hand-over is most of the client's CPU
//! (docs/performance.md). This transport speaks exactly what a streaming completion needs:
//! POST with a JSON body, a response head parsed with `httparse`, and a body framed by
//! `Content-Length`, `chunked` encoding or the connection's end. Connections are kept alive and
//! reused. `https://` servers go through reqwest instead.

use bytes::BytesMut;
use std::sync::Mutex;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most response-head bytes accepted.
const HEAD_LIMIT: usize = 64 * 1024;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 64;

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
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Decodes `Transfer-Encoding: chunked` incrementally (RFC 9112 section 7.1); chunk extensions and
/// trailers are skipped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Decodes `input`, handing each run of body bytes to `out`. Returns an error for framing
    /// that is not chunked encoding.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Data(left) => {
                    let n = (left as usize).min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.state = if left as usize == n {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > 4096 {
                            return Err("chunk line too long".into());
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::Size => {
                            let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                            let text = std::str::from_utf8(hex)
                                .map_err(|_| "chunk size is not text")?
                                .trim();
                            let size = u64::from_str_radix(text, 16)
                                .map_err(|_| format!("bad chunk size `{text}`"))?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err("chunk data not followed by CRLF".into()),
                        _ if line.is_empty() => ChunkState::Done,
                        _ => ChunkState::Trailer,
                    };
                }
            }
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
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

/// HTTP/1.1 to one `http://host:port` origin, with a pool of idle connections.
#[derive(Debug)]
pub struct Transport {
    authority: String,
    path: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl Transport {
    /// For `http://` URLs only; `None` for anything else.
    pub fn for_url(url: &str) -> Option<Self> {
        let parsed = reqwest::Url::parse(url).ok()?;
        if parsed.scheme() != "http" {
            return None;
        }
        let host = parsed.host_str()?;
        let port = parsed.port_or_known_default()?;
        // `host_str` keeps an IPv6 address's brackets.
        let authority = format!("{host}:{port}");
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        Some(Self {
            authority,
            path,
            idle: Mutex::new(Vec::new()),
        })
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

    async fn connection(&self) -> Result<(TcpStream, bool), TransportError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok((c, true));
        }
        self.connection_fresh().await
    }

    /// Posts `body` and hands every run of body bytes to `on_body` with the instant the read
    /// that brought them returned (taken before any parsing).
    pub async fn post(
        &self,
        headers: &[(&str, &str)],
        body: &[u8],
        mut on_body: impl FnMut(&[u8], Instant) -> Flow,
    ) -> Result<Status, TransportError> {
        let head = self.head(headers, body.len());
        // A pooled connection the server has closed fails on first use: retry once, fresh.
        let (mut conn, reused) = self.connection().await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let first = send_and_read_head(&mut conn, &head, body, &mut buf).await;
        let (status, framing, close, head_at) = match first {
            Ok(r) => r,
            Err(_) if reused => {
                let (c, _) = self.connection_fresh().await?;
                conn = c;
                buf.clear();
                send_and_read_head(&mut conn, &head, body, &mut buf)
                    .await
                    .map_err(before_head)?
            }
            Err(e) => return Err(before_head(e)),
        };
        if status != 200 {
            let mut error_body = Vec::new();
            let _ = read_body(&mut conn, &mut buf, framing, head_at, |b, _| {
                error_body.extend_from_slice(b);
                if error_body.len() > 4096 {
                    Flow::Abort
                } else {
                    Flow::Continue
                }
            })
            .await;
            return Ok(Status {
                code: status,
                error_body,
            });
        }
        let complete = read_body(&mut conn, &mut buf, framing, head_at, &mut on_body).await?;
        if complete && !close && framing != Framing::UntilClose {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        Ok(Status {
            code: status,
            error_body: Vec::new(),
        })
    }

    async fn connection_fresh(&self) -> Result<(TcpStream, bool), TransportError> {
        let c = TcpStream::connect(&self.authority)
            .await
            .map_err(TransportError::Connect)?;
        c.set_nodelay(true).map_err(TransportError::Connect)?;
        Ok((c, false))
    }
}

/// A failure before any response arrived is a failure to connect, as a client reports it.
fn before_head(e: TransportError) -> TransportError {
    match e {
        TransportError::Io(x) => TransportError::Connect(x),
        TransportError::Closed => TransportError::Connect(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before the response head",
        )),
        other => other,
    }
}

/// Writes the request and reads until the response head is complete. Returns the status, the
/// body's framing, whether the server will close the connection, and when the last read returned
/// (body bytes that came with the head arrived then).
async fn send_and_read_head(
    conn: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    buf: &mut BytesMut,
) -> Result<(u16, Framing, bool, Instant), TransportError> {
    conn.write_all(head).await.map_err(TransportError::Io)?;
    conn.write_all(body).await.map_err(TransportError::Io)?;
    loop {
        let n = conn.read_buf(buf).await.map_err(TransportError::Io)?;
        let at = Instant::now();
        if n == 0 {
            return Err(TransportError::Closed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
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
                let _ = buf.split_to(len);
                return Ok((code, framing, close, at));
            }
            Ok(httparse::Status::Partial) if buf.len() < HEAD_LIMIT => {}
            Ok(httparse::Status::Partial) => {
                return Err(TransportError::Malformed("response head too large".into()))
            }
            Err(e) => return Err(TransportError::Malformed(e.to_string())),
        }
    }
}

/// Reads the body to its end (or until `on_body` aborts). Bytes already buffered with the head
/// arrived at `head_at`. Returns whether the body was read completely.
async fn read_body(
    conn: &mut TcpStream,
    buf: &mut BytesMut,
    framing: Framing,
    head_at: Instant,
    mut on_body: impl FnMut(&[u8], Instant) -> Flow,
) -> Result<bool, TransportError> {
    let mut chunked = ChunkedDecoder::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut finished = false;
    let mut at = head_at;
    loop {
        let mut flow = Flow::Continue;
        let mut deliver = |bytes: &[u8]| {
            if !finished && flow != Flow::Abort && !bytes.is_empty() {
                flow = on_body(bytes, at);
            }
        };
        match framing {
            Framing::Chunked => chunked
                .feed(buf, &mut deliver)
                .map_err(TransportError::Malformed)?,
            Framing::Length(_) => {
                let n = (remaining as usize).min(buf.len());
                deliver(&buf[..n]);
                remaining -= n as u64;
            }
            Framing::UntilClose => deliver(buf),
        }
        buf.clear();
        match flow {
            Flow::Abort => return Ok(false),
            Flow::Finished => finished = true,
            Flow::Continue => {}
        }
        let done = match framing {
            Framing::Chunked => chunked.is_done(),
            Framing::Length(_) => remaining == 0,
            Framing::UntilClose => false,
        };
        if done {
            return Ok(true);
        }
        let n = conn.read_buf(buf).await.map_err(TransportError::Io)?;
        at = Instant::now();
        if n == 0 {
            return match framing {
                Framing::UntilClose => Ok(true),
                _ if finished => Ok(false),
                _ => Err(TransportError::Closed),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, |b| out.extend_from_slice(b))
                .expect("valid chunked body");
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(decode(&[body]), (b"hello, world".to_vec(), true));
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(&bytes), (b"hello, world".to_vec(), true));
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(
                decode(&[a, b]),
                (b"hello, world".to_vec(), true),
                "split at {split}"
            );
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        let mut d = ChunkedDecoder::default();
        assert!(d.feed(b"zz\r\n", |_| {}).is_err());
        let mut d = ChunkedDecoder::default();
        assert!(d.feed(b"2\r\nabX\r\n", |_| {}).is_err());
    }

    #[test]
    fn only_plain_http_urls_get_this_transport() {
        let t = Transport::for_url("http://node12:8000/v1/completions").expect("http");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("node12:8000", "/v1/completions")
        );
        assert!(Transport::for_url("https://api.example.com/v1/completions").is_none());
        assert_eq!(
            Transport::for_url("http://[::1]/v1/x").map(|t| t.authority),
            Some("[::1]:80".into())
        );
    }
}
